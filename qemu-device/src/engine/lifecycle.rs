//! The device's life: `CONTROL` writes and resets (spec §3, §5). Enable latches and
//! checks the table, ring and shadow-page registers; disable and reset drop every
//! context and the whole TLB.

use mnic_abi::{control, counter, event, reg, status, NUM_CONTEXTS};
use mnic_abi::{Command, CtxEntry, Event, RING_LOG2_MAX, RING_LOG2_MIN};

use super::error::DeviceError;
use super::evq::EventQueue;
use super::live::LiveSet;
use super::shadow;
use super::state::Core;
use crate::mem::{self, GuestMem};
use crate::shared::Request;

impl Core {
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
                    self.cmd_shadow = 0;
                    self.polling = false;
                    self.sh.clear_reg(reg::STATUS, status::ENABLED);
                }
            }
        }
    }

    /// Everything back to the reset state. Only the fault-id and request-id counters
    /// survive, so ids stay unique per device, and the fabric attachment (the node is
    /// the device's, not its state's).
    pub fn reset(&mut self) {
        tracing::debug!("device reset");
        let next_fault_id = self.next_fault_id;
        let next_req_id = self.next_req_id;
        let link = self.link.take();
        *self = Core::new(self.sh.clone());
        self.next_fault_id = next_fault_id;
        self.next_req_id = next_req_id;
        self.link = link;
        self.sh.clear_regs();
        self.sh.clear_ctxs();
        self.sh.counters.clear();
        self.sh.oracle.clear();
    }

    fn stop_all(&mut self) {
        for c in self.ctxs.iter_mut() {
            *c = None;
        }
        self.keys = Default::default();
        self.live = LiveSet::default();
        self.shadowed = LiveSet::default();
        self.sh.clear_ctxs();
        self.tlb.clear();
        self.sh.counters.set(counter::TLB_ENTRIES, 0);
    }

    /// Records whether slot `i` holds a context: for the server (doorbells of stopped
    /// contexts are refused) and for the poll loop (which visits only live slots, and
    /// reads the shadow pages of only those that have one).
    pub(super) fn set_live(&mut self, i: usize, on: bool) {
        self.sh.set_ctx_live(i, on);
        self.live.set(i, on);
        let shadow = self
            .ctxs
            .get(i)
            .and_then(Option::as_ref)
            .map_or(0, |x| x.shadow());
        self.shadowed.set(i, on && shadow != 0);
    }

    /// ENABLE 0→1: latch and validate the table, ring and shadow-page registers.
    fn enable(&mut self, m: &GuestMem) {
        let ctx_table = self.sh.reg64(reg::CTX_TABLE_LO, reg::CTX_TABLE_HI);
        let cmd_shadow = self.sh.reg64(reg::SHADOW_BASE_LO, reg::SHADOW_BASE_HI);
        let cmdq = self.sh.reg64(reg::CMDQ_BASE_LO, reg::CMDQ_BASE_HI);
        let evq = self.sh.reg64(reg::EVQ_BASE_LO, reg::EVQ_BASE_HI);
        let cmd_log2 = self.sh.reg(reg::CMDQ_SIZE_LOG2);
        let ev_log2 = self.sh.reg(reg::EVQ_SIZE_LOG2);
        let ring_ok = |base: u64, log2: u32, entry: u64| {
            let log2_ok = (u32::from(RING_LOG2_MIN)..=u32::from(RING_LOG2_MAX)).contains(&log2);
            log2_ok && base.is_multiple_of(4096) && mem::check(m, base, entry << log2, true).is_ok()
        };
        let table_size = size_of::<CtxEntry>() as u64 * u64::from(NUM_CONTEXTS);
        let table_ok =
            ctx_table.is_multiple_of(4096) && mem::check(m, ctx_table, table_size, false).is_ok();
        let cmd_size = size_of::<Command>() as u64;
        let ev_size = size_of::<Event>() as u64;
        let shadow_ok = shadow::valid(m, cmd_shadow);
        if !(table_ok
            && ring_ok(cmdq, cmd_log2, cmd_size)
            && ring_ok(evq, ev_log2, ev_size)
            && shadow_ok)
        {
            tracing::debug!(
                ctx_table,
                cmdq,
                cmd_log2,
                evq,
                ev_log2,
                cmd_shadow,
                "enable refused"
            );
            self.report(DeviceError::BadConfig, event::NO_CTX, 0);
            return;
        }
        self.stop_all();
        self.ctx_table = ctx_table;
        self.cmdq_base = cmdq;
        self.cmdq_log2 = cmd_log2 as u8;
        self.cmd_head = 0;
        self.evq = EventQueue::new(evq, ev_log2 as u8);
        self.enabled = true;
        self.polling = false;
        // The queue starts at the shadow's tail of this moment (spec §4a). Without bus
        // mastering it cannot be read: the first poll round after it is set reads it.
        self.cmd_shadow = cmd_shadow;
        self.cmd_tail = 0;
        if cmd_shadow != 0 && self.sh.bus_master() && !self.halted {
            self.cmd_tail = shadow::read_tail(m, cmd_shadow, 1 << cmd_log2).unwrap_or(0);
        }
        self.sh.set_reg(reg::CMDQ_HEAD, 0);
        self.sh.set_reg(reg::EVQ_TAIL, 0);
        self.sh.or_reg(reg::STATUS, status::ENABLED);
        tracing::debug!(
            ctx_table,
            cmdq,
            cmd_log2,
            evq,
            ev_log2,
            cmd_shadow,
            "device enabled"
        );
    }
}
