//! The MMIO register decoder (spec §3, §4, §10): what a BAR0 or BAR2 access of the
//! socket thread means. Reads come from the shared register file, the counters and the
//! fabric counters (the data thread's [`RmaStats`](crate::fabric::RmaStats));
//! writes are recorded there and wake the data thread, and the writes only the data
//! thread or the oracle may carry out come back to the caller as a [`Followup`].

use std::sync::Arc;

use mnic_abi::{caps, counter, fabric_counter, oracle_op, reg, NUM_CONTEXTS, STALL_MS_MAX};
use mnic_abi::{MNIC_ID_VALUE, MNIC_VERSION_VALUE};

use crate::counters::Counters;
use crate::mem::GuestMem;
use crate::shared::{Request, Shared};

/// How a BAR0 offset behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reg {
    Const(u32),
    /// `CAPS`: `FABRIC` only on a node of a fabric.
    Caps,
    /// `FABRIC_NODE`: the node id, or `NODE_NONE`.
    FabricNode,
    ReadOnly,
    ReadWrite,
    /// Read-write, and a write wakes the data thread (ring indices).
    Doorbell,
    Control,
    ErrorCode,
    IrqStatus,
    /// Read-write; clearing a bit whose cause is pending signals its vector then.
    IrqMask,
    /// Write-only (reads 0): a defined value is an oracle operation.
    OracleOp,
    /// Read-write, clamped to `STALL_MS_MAX`; the data thread takes the value.
    Stall,
}

/// What the caller of [`Mmio::bar0_write`] still has to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Followup {
    /// Hand this to the data thread and wait for it.
    Request(Request),
    /// Carry out this `ORACLE_OP` now, on the socket thread, with
    /// [`Mmio::oracle_op`] (it needs guest memory).
    Oracle(u32),
}

fn classify(off: u32) -> Option<Reg> {
    Some(match off {
        reg::ID => Reg::Const(MNIC_ID_VALUE),
        reg::VERSION => Reg::Const(MNIC_VERSION_VALUE),
        reg::CAPS => Reg::Caps,
        reg::FABRIC_NODE => Reg::FabricNode,
        reg::NUM_CONTEXTS => Reg::Const(NUM_CONTEXTS),
        reg::CONTROL => Reg::Control,
        reg::STATUS | reg::ERROR_COUNT | reg::CMDQ_HEAD | reg::EVQ_TAIL => Reg::ReadOnly,
        reg::ERROR_CODE => Reg::ErrorCode,
        reg::IRQ_STATUS => Reg::IrqStatus,
        reg::CMDQ_TAIL | reg::EVQ_HEAD => Reg::Doorbell,
        reg::CTX_TABLE_LO
        | reg::CTX_TABLE_HI
        | reg::CMDQ_BASE_LO
        | reg::CMDQ_BASE_HI
        | reg::CMDQ_SIZE_LOG2
        | reg::EVQ_BASE_LO
        | reg::EVQ_BASE_HI
        | reg::EVQ_SIZE_LOG2
        | reg::ORACLE_CTX
        | reg::ORACLE_GEN
        | reg::ORACLE_START_LO
        | reg::ORACLE_START_HI
        | reg::ORACLE_END_LO
        | reg::ORACLE_END_HI
        | reg::SHADOW_BASE_LO
        | reg::SHADOW_BASE_HI
        | reg::SPIN_US
        | reg::SCRATCH => Reg::ReadWrite,
        reg::IRQ_MASK => Reg::IrqMask,
        reg::ORACLE_OP => Reg::OracleOp,
        reg::DEBUG_STALL_MS => Reg::Stall,
        _ => return None,
    })
}

const COUNTERS_END: u32 = reg::COUNTERS + 8 * counter::SLOTS;

/// The MMIO decode of BAR0 and BAR2 over the shared register file. It records values
/// and wakes the data thread; CONTROL writes and oracle operations come back as a
/// [`Followup`] for the caller.
pub struct Mmio {
    sh: Arc<Shared>,
}

impl Mmio {
    /// The MMIO view of `sh`.
    pub fn new(sh: Arc<Shared>) -> Self {
        Mmio { sh }
    }

    /// The shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.sh
    }

    /// Whether the server runs in strict mode.
    pub fn strict(&self) -> bool {
        self.sh.cli_strict
    }

    /// The shared counters.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.sh.counters
    }

    fn bad(&self) {
        self.sh.counters.inc(counter::BAD_MMIO);
    }

    /// Reads `buf.len()` bytes of BAR0 at `off` (the caller checked the BAR bounds).
    /// Bad sizes, misaligned or undefined offsets read all-ones and are counted.
    pub fn bar0_read(&self, off: u64, buf: &mut [u8]) {
        if let Some(v) = self.bar0_read_value(off, buf.len()) {
            let bytes = v.to_le_bytes();
            buf.copy_from_slice(&bytes[..buf.len()]);
        } else {
            self.bad();
            buf.fill(0xff);
        }
    }

    fn bar0_read_value(&self, off: u64, len: usize) -> Option<u64> {
        let off = u32::try_from(off).ok()?;
        match len {
            4 if off % 4 == 0 => {
                if let Some(c) = self.counter_at(off) {
                    return Some(if off % 8 == 0 {
                        c & 0xffff_ffff
                    } else {
                        c >> 32
                    });
                }
                let v = match classify(off)? {
                    Reg::Const(v) => v,
                    Reg::Caps => self.sh.caps(),
                    Reg::FabricNode => u32::from(self.sh.fabric_node()),
                    Reg::OracleOp => 0,
                    _ => self.sh.reg(off),
                };
                Some(u64::from(v))
            }
            8 if off % 8 == 0 => self.counter_at(off),
            _ => None,
        }
    }

    /// The value of the 64-bit counter register whose 8 bytes hold `off`: a `COUNTER`, or
    /// a defined `FABRIC_COUNTER` (0 on a device that is no node of a fabric); `None`
    /// elsewhere (the slots after the last fabric counter are undefined offsets).
    fn counter_at(&self, off: u32) -> Option<u64> {
        let slot = off & !7;
        if (reg::COUNTERS..COUNTERS_END).contains(&slot) {
            return Some(self.sh.counters.get((slot - reg::COUNTERS) / 8));
        }
        let i = slot.checked_sub(reg::FABRIC_COUNTERS)? / 8;
        if i >= fabric_counter::COUNT {
            return None;
        }
        Some(if self.sh.caps() & caps::FABRIC != 0 {
            self.sh.rma.get(i)
        } else {
            0
        })
    }

    /// Writes `data` to BAR0 at `off`. Bad accesses are ignored and counted. A CONTROL
    /// write or an oracle operation is returned for the caller to carry out.
    #[must_use = "a CONTROL write must be handed to the data thread, an oracle op carried out"]
    pub fn bar0_write(&self, off: u64, data: &[u8]) -> Option<Followup> {
        let (Ok(off), Ok(bytes)) = (u32::try_from(off), <[u8; 4]>::try_from(data)) else {
            self.bad();
            return None;
        };
        let v = u32::from_le_bytes(bytes);
        let kind = if off % 4 == 0 { classify(off) } else { None };
        match kind {
            Some(Reg::ReadWrite) => self.sh.set_reg(off, v),
            Some(Reg::Doorbell) => {
                if off == reg::CMDQ_TAIL {
                    // What a shadow page saves (spec §4a): every trapped doorbell.
                    self.sh.counters.inc(counter::DOORBELLS);
                }
                self.sh.set_reg(off, v);
                self.sh.kick();
            }
            Some(Reg::ErrorCode) => self.sh.set_reg(off, 0),
            Some(Reg::IrqStatus) => self.sh.clear_reg(off, v),
            // An interrupt that was held back by the mask is delivered when unmasked, as a
            // pending MSI-X message is.
            Some(Reg::IrqMask) => self.sh.set_irq_mask(v),
            Some(Reg::Control) => return Some(Followup::Request(Request::Control(v))),
            Some(Reg::OracleOp)
                if matches!(
                    v,
                    oracle_op::ARM | oracle_op::INVALIDATE | oracle_op::DISARM
                ) =>
            {
                return Some(Followup::Oracle(v))
            }
            Some(Reg::Stall) => self.sh.set_reg(off, v.min(STALL_MS_MAX)),
            Some(Reg::Const(_) | Reg::Caps | Reg::FabricNode | Reg::ReadOnly | Reg::OracleOp)
            | None => self.bad(),
        }
        None
    }

    /// Carries out an oracle operation that [`Self::bar0_write`] returned, with `m` the
    /// guest memory (for the table check). Synchronous, on the caller's thread: the oracle
    /// must act even while the data thread is stalled in a DMA step.
    pub fn oracle_op(&self, op: u32, m: &GuestMem) {
        crate::oracle_op::carry_out(&self.sh, op, m);
    }

    /// Reads BAR2 (doorbells read back 0).
    pub fn bar2_read(&self, _off: u64, buf: &mut [u8]) {
        buf.fill(0);
    }

    /// Writes BAR2: a 4-byte write to a page's `WQ_TAIL` rings that context's
    /// doorbell (counted in `DOORBELLS` whether or not the context runs); other offsets
    /// and widths are ignored.
    pub fn bar2_write(&self, off: u64, data: &[u8]) {
        let page = mnic_abi::DOORBELL_PAGE_SIZE;
        if let Ok(bytes) = <[u8; 4]>::try_from(data) {
            if off % page == u64::from(reg::DB_WQ_TAIL) {
                let ctx = usize::try_from(off / page).unwrap_or(usize::MAX);
                if ctx < NUM_CONTEXTS as usize {
                    self.sh.counters.inc(counter::DOORBELLS);
                    self.sh.ring_doorbell(ctx, u32::from_le_bytes(bytes));
                }
            }
        }
    }

    /// The last value taken by context `ctx`'s doorbell.
    pub fn doorbell(&self, ctx: usize) -> u32 {
        self.sh.doorbell(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mnic_abi::{caps, control, irq};

    fn dev() -> Mmio {
        Mmio::new(Shared::new(Arc::new(Counters::default()), false))
    }
    fn rd(d: &Mmio, off: u32, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        d.bar0_read(off.into(), &mut b);
        b
    }
    fn rd32(d: &Mmio, off: u32) -> u32 {
        u32::from_le_bytes(rd(d, off, 4).try_into().unwrap())
    }
    fn bad(d: &Mmio) -> u64 {
        d.counters().get(counter::BAD_MMIO)
    }

    #[test]
    fn identity_registers() {
        let d = dev();
        assert_eq!(rd32(&d, reg::ID), MNIC_ID_VALUE);
        assert_eq!(rd32(&d, reg::VERSION), MNIC_VERSION_VALUE);
        assert_eq!(rd32(&d, reg::CAPS), caps::ALL);
        assert_eq!(rd32(&d, reg::CAPS) & caps::FABRIC, 0, "not a node");
        assert_eq!(rd32(&d, reg::FABRIC_NODE), u32::from(mnic_abi::NODE_NONE));
        assert_eq!(rd32(&d, reg::NUM_CONTEXTS), NUM_CONTEXTS);
        assert_eq!(rd32(&d, reg::STATUS), 0);
        assert_eq!(rd32(&d, reg::counter(counter::DMA_OPS)), 0);
        assert_eq!(bad(&d), 0);
    }

    #[test]
    fn a_node_reports_its_id_and_the_fabric_capability() {
        let d = dev();
        d.shared().set_fabric_node(7);
        assert_eq!(rd32(&d, reg::FABRIC_NODE), 7);
        assert_eq!(rd32(&d, reg::CAPS), caps::ALL | caps::FABRIC);
        // Read-only: a write is ignored and counted.
        assert!(d
            .bar0_write(reg::FABRIC_NODE.into(), &3u32.to_le_bytes())
            .is_none());
        assert_eq!(rd32(&d, reg::FABRIC_NODE), 7);
        assert_eq!(bad(&d), 1);
    }

    #[test]
    fn stored_registers() {
        let d = dev();
        assert_eq!(
            d.bar0_write(reg::IRQ_MASK.into(), &7u32.to_le_bytes()),
            None
        );
        assert_eq!(rd32(&d, reg::IRQ_MASK), 7);
        // CONTROL is the data thread's business.
        assert_eq!(
            d.bar0_write(reg::CONTROL.into(), &control::STRICT.to_le_bytes()),
            Some(Followup::Request(Request::Control(control::STRICT)))
        );
        d.shared().set_reg(reg::IRQ_STATUS, irq::EVENT | irq::ERROR);
        let _ = d.bar0_write(reg::IRQ_STATUS.into(), &irq::EVENT.to_le_bytes());
        assert_eq!(rd32(&d, reg::IRQ_STATUS), irq::ERROR, "write 1 to clear");
        d.shared().set_reg(reg::ERROR_CODE, 5);
        let _ = d.bar0_write(reg::ERROR_CODE.into(), &9u32.to_le_bytes());
        assert_eq!(rd32(&d, reg::ERROR_CODE), 0, "any write clears");
        let _ = d.bar0_write(reg::CMDQ_TAIL.into(), &3u32.to_le_bytes());
        assert_eq!(rd32(&d, reg::CMDQ_TAIL), 3);
        assert_eq!(d.counters().get(counter::DOORBELLS), 1);
        let _ = d.bar0_write(reg::EVQ_HEAD.into(), &3u32.to_le_bytes());
        assert_eq!(d.counters().get(counter::DOORBELLS), 1, "not a doorbell");
        for (r, v) in [(reg::SHADOW_BASE_LO, 0x5000u32), (reg::SHADOW_BASE_HI, 1)] {
            assert_eq!(d.bar0_write(r.into(), &v.to_le_bytes()), None);
            assert_eq!(rd32(&d, r), v);
        }
        assert_eq!(bad(&d), 0);
    }

    #[test]
    fn scratch_register_keeps_what_is_written_until_reset() {
        let d = dev();
        assert_eq!(rd32(&d, reg::SCRATCH), 0);
        for v in [0xdead_beef_u32, 0, u32::MAX] {
            assert_eq!(d.bar0_write(reg::SCRATCH.into(), &v.to_le_bytes()), None);
            assert_eq!(rd32(&d, reg::SCRATCH), v);
        }
        // A reset puts every register back to its reset value (the engine does this).
        d.shared().clear_regs();
        assert_eq!(rd32(&d, reg::SCRATCH), 0);
        assert_eq!(bad(&d), 0);
    }

    #[test]
    fn oracle_registers() {
        let d = dev();
        let w = |off: u32, v: u32| d.bar0_write(off.into(), &v.to_le_bytes());
        for (i, r) in [
            reg::ORACLE_CTX,
            reg::ORACLE_GEN,
            reg::ORACLE_START_LO,
            reg::ORACLE_START_HI,
            reg::ORACLE_END_LO,
            reg::ORACLE_END_HI,
        ]
        .into_iter()
        .enumerate()
        {
            assert_eq!(w(r, 0x100 + i as u32), None);
            assert_eq!(rd32(&d, r), 0x100 + i as u32, "register {r:#x}");
        }
        // Defined ops are the caller's to carry out; ORACLE_OP reads 0.
        for op in [oracle_op::ARM, oracle_op::INVALIDATE, oracle_op::DISARM] {
            assert_eq!(w(reg::ORACLE_OP, op), Some(Followup::Oracle(op)));
        }
        assert_eq!(rd32(&d, reg::ORACLE_OP), 0);
        assert_eq!(bad(&d), 0);
        assert_eq!(w(reg::ORACLE_OP, 0), None);
        assert_eq!(w(reg::ORACLE_OP, 4), None);
        assert_eq!(bad(&d), 2, "unknown ops");
        // DEBUG_STALL_MS: clamped, read back until the data thread takes it.
        assert_eq!(w(reg::DEBUG_STALL_MS, 25), None);
        assert_eq!(rd32(&d, reg::DEBUG_STALL_MS), 25);
        assert_eq!(d.shared().take_stall(), 25);
        assert_eq!(rd32(&d, reg::DEBUG_STALL_MS), 0);
        assert_eq!(d.shared().take_stall(), 0);
        let _ = w(reg::DEBUG_STALL_MS, u32::MAX);
        assert_eq!(rd32(&d, reg::DEBUG_STALL_MS), STALL_MS_MAX);
        assert_eq!(bad(&d), 2);
    }

    #[test]
    fn bad_accesses() {
        let d = dev();
        assert_eq!(rd(&d, reg::ID, 2), vec![0xff; 2]);
        assert_eq!(bad(&d), 1);
        assert_eq!(rd(&d, 1, 4), vec![0xff; 4]);
        assert_eq!(rd(&d, 0x0ffc, 4), vec![0xff; 4]);
        assert_eq!(rd(&d, reg::ID, 8), vec![0xff; 8]);
        assert_eq!(rd(&d, reg::ID, 3), vec![0xff; 3]);
        assert_eq!(bad(&d), 5);
        let _ = d.bar0_write(reg::ID.into(), &0u32.to_le_bytes());
        let _ = d.bar0_write(reg::STATUS.into(), &1u32.to_le_bytes());
        let _ = d.bar0_write(0x0ffc, &1u32.to_le_bytes());
        let _ = d.bar0_write(reg::IRQ_MASK.into(), &[1, 2]);
        let _ = d.bar0_write(u64::MAX, &[1, 2, 3, 4]);
        assert_eq!(bad(&d), 10);
        assert_eq!(rd32(&d, reg::STATUS), 0);
        assert_eq!(rd32(&d, reg::IRQ_MASK), 0);
        // The counter is visible through its own slot, 32 and 64 bits wide.
        assert_eq!(rd32(&d, reg::counter(counter::BAD_MMIO)), 10);
        let v = rd(&d, reg::counter(counter::BAD_MMIO), 8);
        assert_eq!(u64::from_le_bytes(v.try_into().unwrap()), 10);
        assert_eq!(rd32(&d, reg::counter(counter::BAD_MMIO) + 4), 0);
    }

    fn rd64(d: &Mmio, off: u32) -> u64 {
        u64::from_le_bytes(rd(d, off, 8).try_into().unwrap())
    }

    #[test]
    fn fabric_counters_read_the_statistics_on_a_node() {
        let d = dev();
        let rma = &d.shared().rma;
        for _ in 0..3 {
            rma.bump(fabric_counter::ERRORS_SENT);
        }
        rma.bump(fabric_counter::FIN_DROPPED);
        // Not a node: every defined slot reads 0, whatever the statistics hold.
        for i in 0..fabric_counter::COUNT {
            assert_eq!(rd64(&d, reg::fabric_counter(i)), 0, "slot {i}");
        }
        assert_eq!(bad(&d), 0);
        d.shared().set_fabric_node(2);
        let errors = reg::fabric_counter(fabric_counter::ERRORS_SENT);
        assert_eq!(rd64(&d, errors), 3);
        assert_eq!(rd32(&d, errors), 3, "low half");
        assert_eq!(rd32(&d, errors + 4), 0, "high half");
        assert_eq!(
            rd64(&d, reg::fabric_counter(fabric_counter::FIN_DROPPED)),
            1
        );
        assert_eq!(rd64(&d, reg::FABRIC_COUNTERS), 0, "put_served");
        // Every defined slot is the statistic of its index.
        let snap = rma.snapshot();
        for i in 0..fabric_counter::COUNT {
            assert_eq!(rd64(&d, reg::fabric_counter(i)), snap[i], "slot {i}");
        }
        assert_eq!(bad(&d), 0);
        // The slots after the last statistic are undefined offsets; the block is read-only.
        let unused = reg::fabric_counter(fabric_counter::COUNT);
        assert_eq!(rd(&d, unused, 8), vec![0xff; 8]);
        assert_eq!(rd(&d, unused + 4, 4), vec![0xff; 4]);
        assert_eq!(
            rd(&d, reg::fabric_counter(fabric_counter::SLOTS - 1), 4),
            vec![0xff; 4]
        );
        assert_eq!(rd(&d, errors + 4, 8), vec![0xff; 8], "misaligned");
        assert_eq!(bad(&d), 4);
        assert!(d.bar0_write(errors.into(), &0u32.to_le_bytes()).is_none());
        assert_eq!(bad(&d), 5);
        assert_eq!(rd64(&d, errors), 3);
        // A reset (the engine clears the registers and the counters) keeps the statistics.
        d.counters().clear();
        d.shared().clear_regs();
        assert_eq!(rd64(&d, errors), 3);
    }

    #[test]
    fn doorbells() {
        let d = dev();
        d.bar2_write(3 * 4096, &5u32.to_le_bytes());
        assert_eq!(d.doorbell(3), 0, "context 3 is not running");
        assert_eq!(d.counters().get(counter::BAD_DOORBELL), 1);
        d.shared().set_ctx_live(3, true);
        d.bar2_write(3 * 4096, &5u32.to_le_bytes());
        d.bar2_write(3 * 4096 + 8, &9u32.to_le_bytes());
        d.bar2_write(u64::MAX - 3, &9u32.to_le_bytes());
        assert_eq!(d.doorbell(3), 5);
        assert_eq!(
            d.counters().get(counter::DOORBELLS),
            2,
            "every WQ_TAIL write, refused or not; not the other offsets"
        );
        let mut b = [1u8; 4];
        d.bar2_read(3 * 4096, &mut b);
        assert_eq!(b, [0; 4]);
        // A halted device ignores doorbells.
        d.shared().set_reg(reg::STATUS, mnic_abi::status::HALTED);
        d.bar2_write(3 * 4096, &6u32.to_le_bytes());
        assert_eq!(d.doorbell(3), 5);
    }

    #[test]
    fn stats_render() {
        let d = dev();
        d.counters().inc(counter::BAD_MMIO);
        let s = d.counters().render();
        assert_eq!(s.lines().count(), counter::COUNT as usize);
        assert!(s.contains("bad_mmio 1\n"));
    }
}
