//! The device state machine's state: [`Core`] with every field the engine's jobs share,
//! and its reset state. The jobs add their methods to `Core` in their own files.

use std::sync::Arc;

use mnic_abi::NUM_CONTEXTS;

use super::context::Ctx;
use super::evq::EventQueue;
use super::keys::Keys;
use super::link::Link;
use super::live::LiveSet;
#[cfg(test)]
use crate::mem::GuestMem;

/// What a unit test runs between a walk's oracle stamp and its table reads.
#[cfg(test)]
pub(super) type WalkHook = Box<dyn FnMut(&GuestMem, u64) + Send>;
use crate::oracle::Access;
use crate::shared::Shared;
use crate::stale::StaleChecker;
use crate::translate::Tlb;

/// The device state machine, driven synchronously by `Core::poll` (the data thread, unit
/// tests, the fuzz driver and the benches all drive the same code).
pub struct Core {
    pub(super) sh: Arc<Shared>,
    pub(super) enabled: bool,
    pub(super) halted: bool,
    pub(super) ctx_table: u64,
    pub(super) cmdq_base: u64,
    pub(super) cmdq_log2: u8,
    /// Consumer index of the command queue (`CMDQ_HEAD`).
    pub(super) cmd_head: u32,
    /// GPA of the command queue's shadow page, latched at enable (0: none; the tail is
    /// then `CMDQ_TAIL`).
    pub(super) cmd_shadow: u64,
    /// The command queue's tail as last read from its shadow page (modulo the ring size).
    pub(super) cmd_tail: u32,
    /// The device has written `polling` = 1 into the shadow pages (spec §4a).
    pub(super) polling: bool,
    pub(super) evq: EventQueue,
    /// Sequence number of the last executed command (0: none yet).
    pub(super) seq: u64,
    pub(super) tlb: Tlb,
    pub(super) checker: StaleChecker,
    // Boxed: the poll loop walks every slot, and 256 pointers stay in a few cache lines.
    pub(super) ctxs: Vec<Option<Box<Ctx>>>,
    /// Which `ctxs` slots are occupied.
    pub(super) live: LiveSet,
    /// Which of them have a shadow page (the poll round reads only those).
    pub(super) shadowed: LiveSet,
    /// Next fault id; unique per device (never reset, never 0).
    pub(super) next_fault_id: u64,
    /// TLB hits not yet added to the shared counter: one atomic add per poll round instead
    /// of one per DMA piece.
    pub(super) tlb_hits: u64,
    /// Round-robin start among contexts.
    pub(super) rr: usize,
    /// Interrupt causes raised during this poll, signalled at its end.
    pub(super) irq_pending: u32,
    /// Accesses of armed contexts in the current work step, for the oracle to judge
    /// when the step ends (spec §8a).
    pub(super) oracle_pieces: Vec<Access>,
    /// The fabric, when the device is a node of one (kept across resets).
    pub(super) link: Option<Link>,
    /// Remote keys of the contexts.
    pub(super) keys: Keys,
    /// The `req_id` of the next PUT or GET; per device, never 0 (kept across resets).
    pub(super) next_req_id: u32,
    /// Unit tests: called on every walk with its VA, after the walk's oracle stamp is taken
    /// and before it reads the table (what other threads may do in between).
    #[cfg(test)]
    pub(super) before_walk: Option<WalkHook>,
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
            cmd_shadow: 0,
            cmd_tail: 0,
            polling: false,
            evq: EventQueue::default(),
            seq: 0,
            tlb: Tlb::default(),
            checker: StaleChecker::default(),
            ctxs: (0..NUM_CONTEXTS).map(|_| None).collect(),
            live: LiveSet::default(),
            shadowed: LiveSet::default(),
            next_fault_id: 1,
            tlb_hits: 0,
            rr: 0,
            irq_pending: 0,
            oracle_pieces: Vec::new(),
            link: None,
            keys: Keys::default(),
            next_req_id: 1,
            #[cfg(test)]
            before_walk: None,
        }
    }

    /// The shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.sh
    }

    /// The device TLB (tests and benches).
    #[cfg(any(test, feature = "testkit"))]
    pub fn tlb_mut(&mut self) -> &mut Tlb {
        &mut self.tlb
    }

    /// Whether a stale access or an oracle violation halts the device.
    pub(super) fn strict(&self) -> bool {
        self.sh.strict()
    }
}
