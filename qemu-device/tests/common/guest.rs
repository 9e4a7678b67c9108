//! The driver's side for the tests that play one against the real device: a fixed layout
//! of guest RAM (context table, rings, buffers), the device enabled over it, and the
//! command ring.

use std::io;

use mnic_abi::{cmd, reg, Completion, CtxEntry, Event, BAR_REGS, CMD_FLAG_IRQ};
use mnic_device::mem::{self, GuestMem};
use zerocopy::{FromBytes, IntoBytes};

use super::Client;

// Guest RAM (a memfd given to the device at GPA 0) and a range without fd (QEMU's ROMs).
pub const RAM: u64 = 16 << 20;
pub const ROM: u64 = 0x4000_0000;
// In RAM: the context table, the command and event rings and the word SYNCs write (where
// the unit tests' harness has them), context 1's work and completion rings, and the
// source and destination of its COPYs.
pub use mnic_device::testkit::{CMDQ, CTX_TABLE, EVQ, SYNC_WORD};
pub const WQ: u64 = 0xb000;
pub const CQ: u64 = 0xc000;
pub const SRC_GPA: u64 = 0x20_0000;
pub const DST_GPA: u64 = 0x30_0000;
// Where context 1's page tables map its rings and buffers.
pub const WQ_VA: u64 = 0x7000_0000;
pub const CQ_VA: u64 = 0x7000_1000;
pub const SRC_VA: u64 = 0x1000_0000;
pub const DST_VA: u64 = 0x2000_0000;

/// A valid context entry: 16-entry rings at [`WQ_VA`] and [`CQ_VA`], page tables at
/// `root`.
pub fn ctx_entry(root: u64) -> CtxEntry {
    CtxEntry {
        flags: mnic_abi::CTX_FLAG_VALID,
        wq_size_log2: 4,
        cq_size_log2: 4,
        root,
        wq_va: WQ_VA,
        cq_va: CQ_VA,
        ..Default::default()
    }
}

/// Event slot `i` of the event ring at [`EVQ`].
pub fn event_at(m: &GuestMem, i: u64) -> Event {
    let mut b = [0u8; size_of::<Event>()];
    mem::read(m, EVQ + b.len() as u64 * i, &mut b).unwrap();
    Event::read_from_bytes(&b).unwrap()
}

/// Completion slot `i` of context 1's completion ring at [`CQ`].
pub fn completion_at(m: &GuestMem, i: u64) -> Completion {
    let mut b = [0u8; size_of::<Completion>()];
    mem::read(m, CQ + b.len() as u64 * i, &mut b).unwrap();
    Completion::read_from_bytes(&b).unwrap()
}

/// Writes the ring registers ([`CTX_TABLE`], and [`CMDQ`] and [`EVQ`] with 16 entries
/// each), then `control` to CONTROL; `Err` if the device stops answering.
pub fn try_enable(c: &mut Client, control: u32) -> io::Result<()> {
    for (r, v) in [
        (reg::CTX_TABLE_LO, CTX_TABLE as u32),
        (reg::CMDQ_BASE_LO, CMDQ as u32),
        (reg::CMDQ_SIZE_LOG2, 4),
        (reg::EVQ_BASE_LO, EVQ as u32),
        (reg::EVQ_SIZE_LOG2, 4),
        (reg::CONTROL, control),
    ] {
        c.try_write(BAR_REGS, r.into(), v)?;
    }
    Ok(())
}

pub fn command(opcode: u8, ctx: u16, arg0: u64, arg1: u64) -> mnic_abi::Command {
    mnic_abi::Command {
        opcode,
        ctx,
        arg0,
        arg1,
        ..Default::default()
    }
}

/// The driver's side of the command ring.
pub struct Cmdq {
    pub tail: u32,
}

impl Cmdq {
    /// Writes the command and rings CMDQ_TAIL.
    pub fn ring(&mut self, c: &mut Client, m: &GuestMem, cm: mnic_abi::Command) {
        mem::write(m, CMDQ + 32 * u64::from(self.tail), cm.as_bytes()).unwrap();
        self.tail = (self.tail + 1) % 16;
        c.write(BAR_REGS, reg::CMDQ_TAIL.into(), self.tail);
    }
    /// Rings the command and waits until the device has executed it.
    pub fn post(&mut self, c: &mut Client, m: &GuestMem, cm: mnic_abi::Command) {
        self.ring(c, m, cm);
        self.wait(c);
    }
    /// Waits until the device has executed every command rung.
    pub fn wait(&mut self, c: &mut Client) {
        let want = self.tail;
        super::wait_until("CMDQ_HEAD", || c.read(reg::CMDQ_HEAD) == want);
    }
    /// A SYNC writing `v` to [`SYNC_WORD`] (with an interrupt if `irq`); whether the
    /// value landed.
    pub fn sync(&mut self, c: &mut Client, m: &GuestMem, v: u64, irq: bool) -> bool {
        let mut s = command(cmd::SYNC, 0, SYNC_WORD, v);
        if irq {
            s.flags = CMD_FLAG_IRQ;
        }
        self.post(c, m, s);
        mem::load_u64(m, SYNC_WORD).unwrap() == v
    }
}
