//! State shared by the socket thread and the data thread: the BAR0 register values,
//! the doorbells, the MSI-X eventfds, bus mastering, the oracle, and the
//! wake-up/request channel.
//!
//! The socket thread records values here and wakes the data thread; it never writes
//! guest memory. (The one thing it reads there is a context's translation table, for an
//! oracle report: see `oracle`.) CONTROL writes and resets are *requests*: the socket
//! thread waits until the data thread has carried them out (between two work steps), so
//! a reset "waits for in-flight DMA" and a STATUS read after an ENABLE write sees the
//! result.

use std::fs::File;
use std::io::Write;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mnic_abi::{control, irq, reg, MSIX_VECTORS, NUM_CONTEXTS};

use crate::counters::Counters;
use crate::fabric::RmaStats;
use crate::oracle::Oracle;

/// Number of 32-bit register slots below the counters.
pub const NREGS: usize = (reg::COUNTERS / 4) as usize;

/// How long the socket thread waits for the data thread to carry out a request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Something only the data thread may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// A write of this value to `CONTROL`.
    Control(u32),
    /// `DEVICE_RESET` (same as `CONTROL.RESET`).
    Reset,
}

#[derive(Default)]
struct Signal {
    /// A doorbell or ring index changed since the data thread last looked.
    work: bool,
    request: Option<Request>,
    req_gen: u64,
    ack_gen: u64,
    shutdown: bool,
}

/// The shared state.
pub struct Shared {
    regs: [AtomicU32; NREGS],
    /// The device counters (also read by the control socket).
    pub counters: Arc<Counters>,
    doorbells: [AtomicU32; NUM_CONTEXTS as usize],
    ctx_live: [AtomicBool; NUM_CONTEXTS as usize],
    /// `--strict` on the command line.
    pub cli_strict: bool,
    /// The oracle (spec §8a).
    pub oracle: Oracle,
    /// The fabric node id (`FABRIC_NODE`), `NODE_NONE` when the device is not a node.
    /// Set once when the transport is attached; a device reset does not change it.
    fabric_node: AtomicU32,
    /// What PUT and GET count (printed by the control socket; not cleared by a reset).
    pub rma: Arc<RmaStats>,
    /// Bus master enable (PCI command register bit 2): without it, no DMA and no MSI-X.
    bus_master: AtomicBool,
    /// The data thread is inside a poll round, where it may touch guest memory (it
    /// leaves it while an injected stall sleeps). SeqCst, with `bus_master`: see
    /// [`Self::set_bus_master`].
    in_round: AtomicBool,
    /// The MSI-X eventfds (non-blocking: see `server`), cloned out of the lock to be
    /// written.
    msix: Mutex<Vec<Option<Arc<File>>>>,
    /// Held while `IRQ_STATUS` or `IRQ_MASK` changes *and* the vectors to signal are
    /// decided (raise on the data thread, unmask and bus master on the socket thread), so
    /// that of two racing sides the second always sees the first: a cause raised and
    /// unmasked is signalled by one of them (see [`Self::raise`]).
    irq: Mutex<()>,
    /// The data thread has died (a panic): the device is gone.
    gone: AtomicBool,
    /// The vfio-user connection, shut down when the data thread dies so that the server
    /// loop ends and QEMU sees the device go.
    peer: Mutex<Option<UnixStream>>,
    /// Tests: the data thread panics at its next turn.
    #[cfg(test)]
    pub(crate) panic_next: AtomicBool,
    sig: Mutex<Signal>,
    wake: Condvar,
    acked: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Shared state in the reset state. Bus mastering is off, as on real hardware after
    /// reset: the driver turns it on (`pci_set_master`), tests with [`Self::set_bus_master`].
    pub fn new(counters: Arc<Counters>, cli_strict: bool) -> Arc<Self> {
        Arc::new(Shared {
            regs: std::array::from_fn(|_| AtomicU32::new(0)),
            counters,
            doorbells: std::array::from_fn(|_| AtomicU32::new(0)),
            ctx_live: std::array::from_fn(|_| AtomicBool::new(false)),
            cli_strict,
            oracle: Oracle::default(),
            fabric_node: AtomicU32::new(u32::from(mnic_abi::NODE_NONE)),
            rma: Arc::new(RmaStats::default()),
            bus_master: AtomicBool::new(false),
            in_round: AtomicBool::new(false),
            msix: Mutex::new((0..MSIX_VECTORS).map(|_| None).collect()),
            irq: Mutex::new(()),
            gone: AtomicBool::new(false),
            peer: Mutex::new(None),
            #[cfg(test)]
            panic_next: AtomicBool::new(false),
            sig: Mutex::new(Signal::default()),
            wake: Condvar::new(),
            acked: Condvar::new(),
        })
    }

    /// The fabric node id, `NODE_NONE` (0xffff) when the device is not a node.
    pub fn fabric_node(&self) -> u16 {
        self.fabric_node.load(Ordering::Relaxed) as u16
    }

    /// Makes the device node `node` of a fabric (`FABRIC_NODE`, `CAPS.FABRIC`).
    pub fn set_fabric_node(&self, node: u16) {
        self.fabric_node.store(u32::from(node), Ordering::Relaxed);
    }

    /// `CAPS`: everything without a fabric, and `FABRIC` on a node (spec §3).
    pub fn caps(&self) -> u32 {
        if self.fabric_node() == mnic_abi::NODE_NONE {
            mnic_abi::caps::ALL
        } else {
            mnic_abi::caps::ALL | mnic_abi::caps::FABRIC
        }
    }

    /// Whether a stale access or an oracle violation halts the device.
    pub fn strict(&self) -> bool {
        self.cli_strict || self.reg(reg::CONTROL) & control::STRICT != 0
    }

    fn slot(&self, off: u32) -> Option<&AtomicU32> {
        self.regs.get(off as usize / 4)
    }

    /// The value of the 32-bit register at `off` (0 for unknown offsets).
    pub fn reg(&self, off: u32) -> u32 {
        self.slot(off).map_or(0, |r| r.load(Ordering::Acquire))
    }

    /// The 64-bit value of a register pair.
    pub fn reg64(&self, lo: u32, hi: u32) -> u64 {
        u64::from(self.reg(lo)) | u64::from(self.reg(hi)) << 32
    }

    /// Data thread: takes the armed `DEBUG_STALL_MS` (0 if none), disarming it.
    #[inline]
    pub fn take_stall(&self) -> u32 {
        match self.slot(reg::DEBUG_STALL_MS) {
            // A load first: the common case (nothing armed) stays a plain read.
            Some(r) if r.load(Ordering::Relaxed) != 0 => r.swap(0, Ordering::AcqRel),
            _ => 0,
        }
    }

    /// Stores `v` into the register at `off`.
    pub fn set_reg(&self, off: u32, v: u32) {
        if let Some(r) = self.slot(off) {
            r.store(v, Ordering::Release);
        }
    }

    /// Sets bits in the register at `off`.
    pub fn or_reg(&self, off: u32, bits: u32) {
        if let Some(r) = self.slot(off) {
            r.fetch_or(bits, Ordering::AcqRel);
        }
    }

    /// Clears bits in the register at `off`.
    pub fn clear_reg(&self, off: u32, bits: u32) {
        if let Some(r) = self.slot(off) {
            r.fetch_and(!bits, Ordering::AcqRel);
        }
    }

    /// Stores `v` if the register at `off` is 0 (ERROR_CODE keeps the first error).
    pub fn set_reg_if_zero(&self, off: u32, v: u32) {
        if let Some(r) = self.slot(off) {
            let _ = r.compare_exchange(0, v, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// Zeroes every register.
    pub fn clear_regs(&self) {
        for r in &self.regs {
            r.store(0, Ordering::Release);
        }
    }

    /// The last `WQ_TAIL` written for context `c`.
    pub fn doorbell(&self, c: usize) -> u32 {
        self.doorbells
            .get(c)
            .map_or(0, |d| d.load(Ordering::Acquire))
    }

    /// Records a doorbell write. Refused (and counted) for a context that is not
    /// running; ignored while the device is halted. Returns whether it was taken.
    pub fn ring_doorbell(&self, c: usize, v: u32) -> bool {
        if self.reg(reg::STATUS) & mnic_abi::status::HALTED != 0 {
            return false;
        }
        let live = self
            .ctx_live
            .get(c)
            .is_some_and(|l| l.load(Ordering::Acquire));
        if !live {
            self.counters.inc(mnic_abi::counter::BAD_DOORBELL);
            return false;
        }
        self.doorbells[c].store(v, Ordering::Release);
        self.kick();
        true
    }

    /// Marks context `c` running (doorbell reset to 0) or stopped.
    pub fn set_ctx_live(&self, c: usize, live: bool) {
        if let (Some(l), Some(d)) = (self.ctx_live.get(c), self.doorbells.get(c)) {
            if live {
                d.store(0, Ordering::Release);
            }
            l.store(live, Ordering::Release);
        }
    }

    /// Stops every context and zeroes every doorbell.
    pub fn clear_ctxs(&self) {
        for (l, d) in self.ctx_live.iter().zip(&self.doorbells) {
            l.store(false, Ordering::Release);
            d.store(0, Ordering::Release);
        }
    }

    /// Installs (or removes) the eventfd of MSI-X vector `v`. The server installs only
    /// non-blocking eventfds: a signal never blocks the thread that sends it.
    pub fn set_msix(&self, v: usize, fd: Option<File>) {
        if let Some(s) = lock(&self.msix).get_mut(v) {
            *s = fd.map(Arc::new);
        }
    }

    /// Signals MSI-X vector `v` (writes 1 to its eventfd, if QEMU gave one). An MSI-X
    /// message is a memory write: nothing is sent without bus mastering.
    pub fn signal_msix(&self, v: usize) {
        if !self.bus_master() {
            return;
        }
        // Written outside the lock: SET_IRQS is never held up by a signal.
        let f = lock(&self.msix).get(v).cloned().flatten();
        if let Some(f) = f {
            // EAGAIN (counter saturated) only means the interrupt is pending anyway.
            let _ = (&*f).write(&1u64.to_ne_bytes());
        }
    }

    /// Data thread: raises the interrupt causes `bits` (IRQ_STATUS), signalling the vectors
    /// of those `IRQ_MASK` lets through.
    ///
    /// Why a lock and not orderings: raising (set a status bit, then look at the mask) and
    /// unmasking (clear a mask bit, then look at the status) are each a store followed by a
    /// load of the other location; with release/acquire both loads may see the old values
    /// (store buffering) and neither side signals. Under one mutex the two decisions are
    /// ordered, and the second sees the first's store.
    pub fn raise(&self, bits: u32) {
        let unmasked = {
            let _g = lock(&self.irq);
            self.or_reg(reg::IRQ_STATUS, bits);
            bits & !self.reg(reg::IRQ_MASK)
        };
        self.signal_vectors(unmasked);
    }

    /// Socket thread: an `IRQ_MASK` write. A cause held back by the mask and pending in
    /// `IRQ_STATUS` is signalled when unmasked, as a pending MSI-X message is delivered.
    pub fn set_irq_mask(&self, v: u32) {
        let released = {
            let _g = lock(&self.irq);
            let old = self.reg(reg::IRQ_MASK);
            self.set_reg(reg::IRQ_MASK, v);
            self.reg(reg::IRQ_STATUS) & old & !v
        };
        self.signal_vectors(released);
    }

    /// Signals the vectors of the interrupt causes `bits` that `IRQ_MASK` lets through.
    pub fn signal_causes(&self, bits: u32) {
        let unmasked = {
            let _g = lock(&self.irq);
            bits & !self.reg(reg::IRQ_MASK)
        };
        self.signal_vectors(unmasked);
    }

    /// Signals the vectors of the causes `unmasked` (already filtered by the mask).
    fn signal_vectors(&self, unmasked: u32) {
        if unmasked & (irq::EVENT | irq::ERROR) != 0 {
            self.signal_msix(usize::from(mnic_abi::VECTOR_EVENT));
        }
        if unmasked & irq::CMD_DONE != 0 {
            self.signal_msix(usize::from(mnic_abi::VECTOR_CMD_DONE));
        }
    }

    /// Whether the device may master the bus (DMA, MSI-X).
    #[inline]
    pub fn bus_master(&self) -> bool {
        self.bus_master.load(Ordering::SeqCst)
    }

    /// The bus-master bit was written (spec §3). Setting it wakes the data thread and
    /// delivers the interrupts held back while it was clear. Clearing it returns once the
    /// data thread is outside a poll round (a stalled access does not count: it checks
    /// the bit after its stall), so that when the config write is answered, no DMA
    /// happens any more.
    pub fn set_bus_master(&self, on: bool) {
        let was = self.bus_master.swap(on, Ordering::SeqCst);
        if on && !was {
            self.kick();
            // The status is read under the interrupt lock: a raise that decided before
            // saw bus mastering off (and sent nothing) has set its bit by now; one that
            // decides after sees bus mastering on (the swap precedes our unlock).
            let pending = {
                let _g = lock(&self.irq);
                self.reg(reg::IRQ_STATUS) & !self.reg(reg::IRQ_MASK)
            };
            self.signal_vectors(pending);
        } else if was && !on {
            // Store-then-load on both sides, all SeqCst (`dma_begin` stores `in_round`,
            // then the round loads `bus_master`): either the round sees the bit clear, or
            // we see the round and wait for it. Polled: clearing the bit is rare, rounds
            // are short, and the data thread then pays no wake-up per round.
            let t = Instant::now();
            while self.in_round.load(Ordering::SeqCst) && !self.shutting_down() {
                if t.elapsed() > REQUEST_TIMEOUT {
                    tracing::error!("bus master off: the data thread did not leave its round");
                    return;
                }
                std::thread::sleep(Duration::from_micros(20));
            }
        }
    }

    /// Data thread: a poll round begins (it may touch guest memory until `dma_end`).
    /// The engine thread brackets its rounds; a `Core` polled directly (tests, benches)
    /// has no socket thread to coordinate with and need not.
    #[inline]
    pub fn dma_begin(&self) {
        self.in_round.store(true, Ordering::SeqCst);
    }

    /// Data thread: the poll round is over.
    #[inline]
    pub fn dma_end(&self) {
        self.in_round.store(false, Ordering::Release);
    }

    /// Data thread: an injected stall. Sleeps outside the round (if it was in one), so
    /// clearing bus mastering does not wait for it; the caller checks the bit afterwards.
    pub fn stall(&self, d: Duration) {
        let inside = self.in_round.swap(false, Ordering::SeqCst);
        std::thread::sleep(d);
        if inside {
            self.dma_begin();
        }
    }

    /// Wakes the data thread: a doorbell or ring index changed.
    pub fn kick(&self) {
        lock(&self.sig).work = true;
        self.wake.notify_one();
    }

    /// Hands `r` to the data thread and waits until it has been carried out.
    pub fn request(&self, r: Request) {
        let mut s = lock(&self.sig);
        s.request = Some(r);
        s.req_gen += 1;
        let gen = s.req_gen;
        self.wake.notify_one();
        let t = Instant::now();
        while s.ack_gen < gen && !s.shutdown {
            let left = REQUEST_TIMEOUT.saturating_sub(t.elapsed());
            if left.is_zero() {
                tracing::error!(?r, "data thread did not answer a request");
                return;
            }
            s = self
                .acked
                .wait_timeout(s, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Data thread: the pending request, if any.
    pub fn take_request(&self) -> Option<Request> {
        lock(&self.sig).request.take()
    }

    /// Data thread: the request taken last is done.
    pub fn ack(&self) {
        let mut s = lock(&self.sig);
        s.ack_gen = s.req_gen;
        self.acked.notify_all();
    }

    /// Data thread: sleeps until kicked, a request or shutdown arrives, or `until`. The
    /// kick stays recorded for [`Self::take_kick`].
    pub fn wait_for_work(&self, until: Option<Instant>) {
        let mut s = lock(&self.sig);
        // A spurious wake-up is harmless: the caller polls a round and comes back.
        if !(s.work || s.request.is_some() || s.shutdown) {
            s = match until {
                Some(t) => {
                    let d = t.saturating_duration_since(Instant::now());
                    self.wake
                        .wait_timeout(s, d)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self.wake.wait(s).unwrap_or_else(|p| p.into_inner()),
            };
        }
        drop(s);
    }

    /// Data thread, before a poll round: whether it was kicked (a doorbell, a ring index,
    /// bus mastering) since the last call, clearing it. A kick after this call is kept
    /// for the next one; the round reads the registers after it, so none is lost.
    pub fn take_kick(&self) -> bool {
        std::mem::take(&mut lock(&self.sig).work)
    }

    /// The connection to shut down if the data thread dies.
    pub fn set_peer(&self, peer: UnixStream) {
        *lock(&self.peer) = Some(peer);
    }

    /// Data thread, unwinding from a panic: the device is gone. Nobody waits for it any
    /// more (requests, bus master clears and DMA_UNMAP return at once: its snapshot went
    /// with the unwinding), and the connection is shut down so that the server loop ends
    /// and QEMU sees the device go (as a device that fell off the bus).
    pub fn data_thread_died(&self) {
        tracing::error!("the data thread died: the device is gone");
        self.gone.store(true, Ordering::SeqCst);
        // The connection first: a request the socket thread is waiting for gets no
        // reply (it cannot have been carried out).
        if let Some(p) = lock(&self.peer).take() {
            let _ = p.shutdown(Shutdown::Both);
        }
        self.in_round.store(false, Ordering::SeqCst);
        lock(&self.sig).shutdown = true;
        self.wake.notify_all();
        self.acked.notify_all();
    }

    /// Whether the data thread has died.
    pub fn data_thread_gone(&self) -> bool {
        self.gone.load(Ordering::SeqCst)
    }

    /// Asks the data thread to exit.
    pub fn shutdown(&self) {
        lock(&self.sig).shutdown = true;
        self.wake.notify_all();
        self.acked.notify_all();
    }

    /// Whether shutdown was asked for.
    pub fn shutting_down(&self) -> bool {
        lock(&self.sig).shutdown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Arc<Shared> {
        Shared::new(Arc::new(Counters::default()), false)
    }

    #[test]
    fn bus_master_on_wakes_the_engine() {
        let sh = shared();
        sh.set_bus_master(true);
        let t = Instant::now();
        sh.wait_for_work(Some(t + Duration::from_secs(5)));
        assert!(t.elapsed() < Duration::from_secs(1), "kicked");
        assert!(sh.take_kick());
        assert!(!sh.take_kick(), "taken once");
    }

    #[test]
    fn bus_master_off_waits_for_the_round() {
        let sh = shared();
        assert!(!sh.bus_master(), "off after reset");
        sh.set_bus_master(true);
        sh.dma_begin();
        let sh2 = sh.clone();
        let t = std::thread::spawn(move || sh2.set_bus_master(false));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!t.is_finished(), "a round is touching memory");
        assert!(!sh.bus_master(), "the bit is clear at once");
        sh.dma_end();
        t.join().unwrap();
        // Outside a round (or in a stall) it returns at once.
        sh.set_bus_master(true);
        sh.dma_begin();
        let sh2 = sh.clone();
        let t = std::thread::spawn(move || sh2.set_bus_master(false));
        sh.stall(Duration::from_millis(100));
        assert!(t.is_finished());
        t.join().unwrap();
        sh.dma_end();
    }

    /// Unmasking a cause (socket thread) while the data thread raises it: whichever comes
    /// second must signal the vector. Two threads released together many times; every
    /// round ends with the cause raised and unmasked, so its eventfd must have fired.
    #[test]
    fn unmask_racing_raise_never_loses_the_interrupt() {
        use std::os::fd::{FromRawFd, IntoRawFd};
        use std::sync::atomic::AtomicU64;
        let sh = shared();
        sh.set_bus_master(true);
        let efd = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let dup = efd.try_clone().unwrap();
        // SAFETY: the duplicated eventfd is owned by nobody else.
        sh.set_msix(0, Some(unsafe { File::from_raw_fd(dup.into_raw_fd()) }));
        // Rounds: `go` is the round the raiser may start, `done` the last it finished.
        let go = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicU64::new(0));
        let rounds: u64 = 200_000;
        let raiser = {
            let (sh, go, done) = (sh.clone(), go.clone(), done.clone());
            std::thread::spawn(move || {
                for r in 1..=rounds {
                    while go.load(Ordering::Acquire) < r {
                        std::hint::spin_loop();
                    }
                    sh.raise(irq::EVENT);
                    done.store(r, Ordering::Release);
                }
            })
        };
        let t = Instant::now();
        let (mut lost, mut ran) = (0u64, 0u64);
        for r in 1..=rounds {
            sh.set_reg(reg::IRQ_MASK, irq::EVENT);
            sh.set_reg(reg::IRQ_STATUS, 0);
            let _ = efd.read();
            go.store(r, Ordering::Release);
            // What the MMIO decoder does for an IRQ_MASK write.
            sh.set_irq_mask(0);
            while done.load(Ordering::Acquire) < r {
                std::hint::spin_loop();
            }
            ran = r;
            if efd.read().is_err() {
                lost += 1;
            }
            if t.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
        go.store(rounds, Ordering::Release);
        raiser.join().unwrap();
        assert_eq!(lost, 0, "{lost} of {ran} interrupts lost");
    }
}
