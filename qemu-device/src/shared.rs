//! State shared by the socket thread and the data thread: the BAR0 register values,
//! the doorbells, the MSI-X eventfds, and the wake-up/request channel.
//!
//! The socket thread only records values here and wakes the data thread; it never
//! walks tables or touches guest memory. CONTROL writes and resets are *requests*:
//! the socket thread waits until the data thread has carried them out (between two
//! work steps), so a reset "waits for in-flight DMA" and a STATUS read after an
//! ENABLE write sees the result.

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mnic_abi::{reg, MSIX_VECTORS, NUM_CONTEXTS};

use crate::device::Counters;

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
    msix: Mutex<Vec<Option<File>>>,
    sig: Mutex<Signal>,
    wake: Condvar,
    acked: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Shared state in the reset state.
    pub fn new(counters: Arc<Counters>, cli_strict: bool) -> Arc<Self> {
        Arc::new(Shared {
            regs: std::array::from_fn(|_| AtomicU32::new(0)),
            counters,
            doorbells: std::array::from_fn(|_| AtomicU32::new(0)),
            ctx_live: std::array::from_fn(|_| AtomicBool::new(false)),
            cli_strict,
            msix: Mutex::new((0..MSIX_VECTORS).map(|_| None).collect()),
            sig: Mutex::new(Signal::default()),
            wake: Condvar::new(),
            acked: Condvar::new(),
        })
    }

    fn slot(&self, off: u32) -> Option<&AtomicU32> {
        self.regs.get(off as usize / 4)
    }

    /// The value of the 32-bit register at `off` (0 for unknown offsets).
    pub fn reg(&self, off: u32) -> u32 {
        self.slot(off).map_or(0, |r| r.load(Ordering::Acquire))
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

    /// Installs (or removes) the eventfd of MSI-X vector `v`.
    pub fn set_msix(&self, v: usize, fd: Option<File>) {
        if let Some(s) = lock(&self.msix).get_mut(v) {
            *s = fd;
        }
    }

    /// Signals MSI-X vector `v` (writes 1 to its eventfd, if QEMU gave one).
    pub fn signal_msix(&self, v: usize) {
        if let Some(Some(f)) = lock(&self.msix).get(v) {
            // EAGAIN (counter saturated) only means the interrupt is pending anyway.
            let _ = (&*f).write(&1u64.to_ne_bytes());
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

    /// Data thread: sleeps until kicked, a request or shutdown arrives, or `until`.
    pub fn wait_for_work(&self, until: Option<Instant>) {
        let mut s = lock(&self.sig);
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
        s.work = false;
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
