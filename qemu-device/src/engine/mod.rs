//! The data path: one data thread that executes commands, posts events and runs the
//! contexts' work, separate from the vfio-user socket loop.
//!
//! [`Core`] is the device state machine, driven synchronously by [`Core::poll`] (the
//! data thread, unit tests, the fuzz driver and the benches all drive the same code).
//! [`Engine`] is the thread around it.
//!
//! Why SYNC's promise holds by construction: this thread is the only DMA issuer, and
//! it executes commands only *between* work steps. A work step translates every
//! access through the TLB at the moment of the access (no translation is kept across
//! steps) and finishes its DMA before it returns. So when a SYNC runs, every
//! invalidation before it has dropped its TLB entries, and no DMA that used one of
//! them is still in flight. Steps are bounded (a long COPY is split), so a SYNC is
//! never starved.
//!
//! The engine runs only while bus mastering is on (spec §3), and a work step checks it
//! again right before each access touches memory (`check`).

mod check;
mod cmdq;
mod evq;
mod traffic;
mod work;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use mnic_abi::{control, counter, event, irq, reg, status, Event, NUM_CONTEXTS};
use mnic_abi::{RING_LOG2_MAX, RING_LOG2_MIN};

use crate::mem::{self, GuestMem, GuestRam};
use crate::oracle::Access;
use crate::shared::{Request, Shared};
use crate::stale::StaleChecker;
use crate::translate::Tlb;

pub use evq::{EventQueue, BACKLOG_BOUND, BACKLOG_MAX};
pub use traffic::{mix, op as traffic_op, pattern as traffic_pattern};
pub use work::{Ctx, COPY_STEP};

/// Commands executed per poll before the contexts get a turn.
const CMD_BUDGET: usize = 64;

/// Words of the bitmap of enabled contexts.
const LIVE_WORDS: usize = NUM_CONTEXTS as usize / 64;
const _: () = assert!((NUM_CONTEXTS as usize).is_multiple_of(64));

/// The set bits of `live` at or above `from`, then those below it: one round-robin pass
/// over the enabled contexts.
fn round_robin(live: [u64; LIVE_WORDS], from: usize) -> impl Iterator<Item = usize> {
    let ones = move |lo: usize, hi: usize| {
        (0..LIVE_WORDS)
            .flat_map(move |w| {
                let mut bits = live[w];
                std::iter::from_fn(move || {
                    let t = bits.trailing_zeros() as usize;
                    bits &= bits.checked_sub(1)?;
                    Some(w * 64 + t)
                })
            })
            .filter(move |&i| (lo..hi).contains(&i))
    };
    ones(from, NUM_CONTEXTS as usize).chain(ones(0, from))
}

/// What a poll achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    /// Something happened; poll again.
    Busy,
    /// Nothing to do until woken, or until the instant (a throttled traffic item).
    Idle(Option<Instant>),
}

/// The device state machine.
pub struct Core {
    sh: Arc<Shared>,
    enabled: bool,
    halted: bool,
    ctx_table: u64,
    cmdq_base: u64,
    cmdq_log2: u8,
    cmd_head: u32,
    evq: EventQueue,
    /// Sequence number of the last executed command (0: none yet).
    seq: u64,
    tlb: Tlb,
    checker: StaleChecker,
    // Boxed: the poll loop walks every slot, and 256 pointers stay in a few cache lines.
    ctxs: Vec<Option<Box<Ctx>>>,
    /// Which `ctxs` slots are occupied: a poll round visits only those (walking all 256
    /// slots after a large copy had pushed them out of the cache cost microseconds).
    live: [u64; LIVE_WORDS],
    /// Next fault id; unique per device (never reset, never 0).
    next_fault_id: u64,
    /// TLB hits not yet added to the shared counter: one atomic add per poll round instead
    /// of one per DMA piece.
    tlb_hits: u64,
    /// Round-robin start among contexts.
    rr: usize,
    scratch: Vec<u8>,
    /// Interrupt causes raised during this poll, signalled at its end.
    irq_pending: u32,
    /// Accesses of armed contexts in the current work step, for the oracle to judge
    /// when the step ends (spec §8a).
    oracle_pieces: Vec<Access>,
}

impl Core {
    /// A device in its reset state over `sh`.
    pub fn new(sh: Arc<Shared>) -> Self {
        Core {
            sh,
            enabled: false,
            halted: false,
            ctx_table: 0,
            cmdq_base: 0,
            cmdq_log2: 0,
            cmd_head: 0,
            evq: EventQueue::default(),
            seq: 0,
            tlb: Tlb::default(),
            checker: StaleChecker::default(),
            ctxs: (0..NUM_CONTEXTS).map(|_| None).collect(),
            live: [0; LIVE_WORDS],
            next_fault_id: 1,
            tlb_hits: 0,
            rr: 0,
            scratch: Vec::new(),
            irq_pending: 0,
            oracle_pieces: Vec::new(),
        }
    }

    /// The shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.sh
    }

    /// The device TLB (tests).
    #[doc(hidden)]
    pub fn tlb_mut(&mut self) -> &mut Tlb {
        &mut self.tlb
    }

    /// Whether a stale access or an oracle violation halts the device.
    fn strict(&self) -> bool {
        self.sh.strict()
    }

    /// Carries out a CONTROL write or a reset.
    pub fn handle(&mut self, r: Request, m: &GuestMem) {
        match r {
            Request::Reset => self.reset(),
            Request::Control(v) if v & control::RESET != 0 => self.reset(),
            Request::Control(v) => {
                self.sh
                    .set_reg(reg::CONTROL, v & (control::ENABLE | control::STRICT));
                if v & control::ENABLE != 0 && !self.enabled {
                    self.enable(m);
                } else if v & control::ENABLE == 0 && self.enabled {
                    tracing::debug!("device disabled");
                    self.stop_all();
                    self.enabled = false;
                    self.sh.clear_reg(reg::STATUS, status::ENABLED);
                }
            }
        }
    }

    /// Everything back to the reset state. Only the fault-id counter survives, so
    /// ids stay unique per device.
    pub fn reset(&mut self) {
        tracing::debug!("device reset");
        let next_fault_id = self.next_fault_id;
        let scratch = std::mem::take(&mut self.scratch);
        *self = Core::new(self.sh.clone());
        self.next_fault_id = next_fault_id;
        self.scratch = scratch;
        self.sh.clear_regs();
        self.sh.clear_ctxs();
        self.sh.counters.clear();
        self.sh.oracle.clear();
    }

    fn stop_all(&mut self) {
        for c in self.ctxs.iter_mut() {
            *c = None;
        }
        self.live = [0; LIVE_WORDS];
        self.sh.clear_ctxs();
        self.tlb.clear();
        self.sh.counters.set(counter::TLB_ENTRIES, 0);
    }

    /// Records whether slot `i` holds a context: for the server (doorbells of stopped
    /// contexts are refused) and for the poll loop (which visits only live slots).
    fn set_live(&mut self, i: usize, on: bool) {
        self.sh.set_ctx_live(i, on);
        if let Some(w) = self.live.get_mut(i / 64) {
            let bit = 1u64 << (i % 64);
            if on {
                *w |= bit;
            } else {
                *w &= !bit;
            }
        }
    }

    /// ENABLE 0→1: latch and validate the table and ring registers.
    fn enable(&mut self, m: &GuestMem) {
        let ctx_table = self.sh.reg64(reg::CTX_TABLE_LO, reg::CTX_TABLE_HI);
        let cmdq = self.sh.reg64(reg::CMDQ_BASE_LO, reg::CMDQ_BASE_HI);
        let evq = self.sh.reg64(reg::EVQ_BASE_LO, reg::EVQ_BASE_HI);
        let cmd_log2 = self.sh.reg(reg::CMDQ_SIZE_LOG2);
        let ev_log2 = self.sh.reg(reg::EVQ_SIZE_LOG2);
        let ring_ok = |base: u64, log2: u32, entry: u64| {
            let log2_ok = (u32::from(RING_LOG2_MIN)..=u32::from(RING_LOG2_MAX)).contains(&log2);
            log2_ok && base.is_multiple_of(4096) && mem::check(m, base, entry << log2, true).is_ok()
        };
        let table_ok = ctx_table.is_multiple_of(4096)
            && mem::check(m, ctx_table, 64 * u64::from(NUM_CONTEXTS), false).is_ok();
        if !(table_ok && ring_ok(cmdq, cmd_log2, 32) && ring_ok(evq, ev_log2, 32)) {
            tracing::debug!(ctx_table, cmdq, cmd_log2, evq, ev_log2, "enable refused");
            self.error(mnic_abi::error::BAD_CONFIG, event::NO_CTX, 0, 0);
            return;
        }
        self.stop_all();
        self.ctx_table = ctx_table;
        self.cmdq_base = cmdq;
        self.cmdq_log2 = cmd_log2 as u8;
        self.cmd_head = 0;
        self.evq = EventQueue::new(evq, ev_log2 as u8);
        self.enabled = true;
        self.sh.set_reg(reg::CMDQ_HEAD, 0);
        self.sh.set_reg(reg::EVQ_TAIL, 0);
        self.sh.or_reg(reg::STATUS, status::ENABLED);
        tracing::debug!(ctx_table, cmdq, cmd_log2, evq, ev_log2, "device enabled");
    }

    /// Records a device error: ERROR_CODE (first only), ERROR_COUNT, the ERRORS
    /// counter, IRQ_STATUS.ERROR, and an ERROR event when the event ring exists.
    fn error(&mut self, code: u32, ctx: u16, addr: u64, info: u64) {
        tracing::debug!(code, ctx, addr, info, "device error");
        self.sh.set_reg_if_zero(reg::ERROR_CODE, code);
        let n = self.sh.reg(reg::ERROR_COUNT).wrapping_add(1);
        self.sh.set_reg(reg::ERROR_COUNT, n);
        self.sh.counters.inc(counter::ERRORS);
        self.irq_pending |= irq::ERROR;
        if self.enabled {
            self.post(Event {
                kind: event::ERROR,
                ctx,
                code,
                addr,
                info,
                ..Event::default()
            });
        }
    }

    fn post(&mut self, ev: Event) {
        self.evq.post(ev, &self.sh.counters);
    }

    /// Raises interrupt causes: IRQ_STATUS bits, then MSI-X unless masked (and never
    /// without bus mastering).
    fn raise(&mut self, bits: u32) {
        if bits == 0 {
            return;
        }
        self.sh.raise(bits);
    }

    fn flush_events(&mut self, m: &GuestMem) -> bool {
        let head = self.sh.reg(reg::EVQ_HEAD);
        let n = match self.evq.flush(m, head) {
            Ok(n) => n,
            Err(e) => {
                // The ring left guest RAM (DMA_UNMAP after enable): keep the events.
                tracing::warn!(addr = e.addr, "event ring not writable");
                0
            }
        };
        self.sh.set_reg(reg::EVQ_TAIL, self.evq.tail());
        if n > 0 {
            self.irq_pending |= irq::EVENT;
        }
        n > 0
    }

    /// Halts the device in strict mode: `code` is `STALE_ACCESS` or `ORACLE_VIOLATION`.
    fn halt(&mut self, code: u32, ctx: u16, va: u64) {
        tracing::warn!(code, ctx, va, "device halted");
        self.error(code, ctx, va, self.seq);
        self.halted = true;
        self.sh.or_reg(reg::STATUS, status::HALTED);
    }

    /// Carries out a halt the oracle asked for from the socket thread (a table violation
    /// in strict mode); returns whether the device is halted.
    fn stopped(&mut self) -> bool {
        if self.sh.oracle.halt_pending() {
            if let Some((ctx, va)) = self.sh.oracle.take_halt() {
                if !self.halted {
                    self.halt(mnic_abi::error::ORACLE_VIOLATION, ctx, va);
                }
            }
        }
        self.halted
    }

    /// One round: events, up to [`CMD_BUDGET`] commands, one step of each runnable
    /// context, events again, interrupts. Bounded work; holds no state in `m` after
    /// it returns.
    pub fn poll(&mut self, m: &GuestMem) -> Activity {
        let a = self.poll_round(m);
        if self.tlb_hits != 0 {
            self.sh
                .counters
                .add(counter::TLB_HITS, std::mem::take(&mut self.tlb_hits));
        }
        a
    }

    fn poll_round(&mut self, m: &GuestMem) -> Activity {
        if !self.enabled || self.halted {
            return Activity::Idle(None);
        }
        if !self.sh.bus_master() {
            // No DMA at all (spec §3); setting the bit kicks us.
            self.sh.counters.inc(counter::DMA_REFUSED);
            return Activity::Idle(None);
        }
        // An oracle halt is applied here so that its ERROR event is flushed below.
        self.stopped();
        let mut busy = self.flush_events(m);
        busy |= self.run_commands(m);
        let mut deadline: Option<Instant> = None;
        let n = self.ctxs.len();
        for c in round_robin(self.live, self.rr) {
            if self.stopped() {
                break;
            }
            match self.step_ctx(m, c) {
                work::Step::Progress => busy = true,
                work::Step::Idle => {}
                work::Step::Until(t) => deadline = Some(deadline.map_or(t, |d| d.min(t))),
            }
        }
        self.rr = (self.rr + 1) % n;
        // A halt asked for during the last step gets its ERROR event out with this round.
        self.stopped();
        busy |= self.flush_events(m);
        let bits = std::mem::take(&mut self.irq_pending);
        self.raise(bits);
        if busy {
            Activity::Busy
        } else {
            Activity::Idle(deadline)
        }
    }

    /// Polls until idle or `max_rounds` rounds (tests and tools).
    pub fn run_until_idle(&mut self, m: &GuestMem, max_rounds: usize) -> Activity {
        for _ in 0..max_rounds {
            if let a @ Activity::Idle(_) = self.poll(m) {
                return a;
            }
        }
        Activity::Busy
    }
}

/// The data thread.
pub struct Engine {
    sh: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Engine {
    /// Starts the data thread over `sh`, accessing guest memory through `ram`.
    pub fn spawn(sh: Arc<Shared>, ram: Arc<GuestRam>) -> std::io::Result<Self> {
        /// Tells everyone waiting for the data thread that it died, if it unwinds.
        struct Watch(Arc<Shared>);
        impl Drop for Watch {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.data_thread_died();
                }
            }
        }
        let mut core = Core::new(sh.clone());
        let thread = std::thread::Builder::new()
            .name("mnic-data".into())
            .spawn(move || {
                let sh = core.shared().clone();
                let _watch = Watch(sh.clone());
                loop {
                    #[cfg(test)]
                    if sh
                        .panic_next
                        .swap(false, std::sync::atomic::Ordering::SeqCst)
                    {
                        panic!("injected data thread panic");
                    }
                    if let Some(r) = sh.take_request() {
                        let m = ram.snapshot();
                        core.handle(r, &m);
                        drop(m);
                        sh.ack();
                        continue;
                    }
                    if sh.shutting_down() {
                        break;
                    }
                    // A snapshot per round only: DMA_UNMAP waits for it. The round is
                    // bracketed for bus mastering: clearing it waits for the round to end.
                    let m = ram.snapshot();
                    sh.dma_begin();
                    let act = core.poll(&m);
                    sh.dma_end();
                    drop(m);
                    if let Activity::Idle(until) = act {
                        sh.wait_for_work(until);
                    }
                }
            })?;
        Ok(Engine {
            sh,
            thread: Some(thread),
        })
    }

    /// Hands a CONTROL write or reset to the data thread and waits for it.
    pub fn request(&self, r: Request) {
        self.sh.request(r);
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.sh.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests;
