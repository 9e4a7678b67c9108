//! A device core on anonymous guest RAM with the driver's side of the rings played by
//! plain function calls, and the guest oracle module's register sequence. Queues may have
//! shadow pages (spec §4a); the harness then posts as a producer must: tail into the
//! page, a fence, and the doorbell register only if `polling` says so.

use std::collections::HashMap;
use std::sync::Arc;

use std::sync::atomic::{fence, Ordering};

use mnic_abi::{cmd, control, pte, reg, ring};
use mnic_abi::{Command, Completion, CtxEntry, Event, Shadow, WorkDesc};
use zerocopy::{FromBytes, IntoBytes};

use super::tables::Tables;
use crate::counters::Counters;
use crate::engine::{Activity, Core, Engine};
use crate::mem::{self, GuestMem, GuestRam};
use crate::mmio::{Followup, Mmio};
use crate::shared::Shared;

/// `len` bytes that differ with `seed` and with their position (and not only every 256
/// bytes), for comparing data moved by the device.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// An oracle operation as the guest's oracle module does it (spec §8a), through `dev` as
/// the socket thread would (any thread may call it): the argument registers, `ORACLE_OP`,
/// then `ORACLE_GEN` read back (the generation after `ARM`).
pub fn oracle_call(
    dev: &Mmio,
    m: &GuestMem,
    op: u32,
    ctx: u16,
    gen: u32,
    start: u64,
    end: u64,
) -> u32 {
    for (r, v) in [
        (reg::ORACLE_CTX, u32::from(ctx)),
        (reg::ORACLE_GEN, gen),
        (reg::ORACLE_START_LO, start as u32),
        (reg::ORACLE_START_HI, (start >> 32) as u32),
        (reg::ORACLE_END_LO, end as u32),
        (reg::ORACLE_END_HI, (end >> 32) as u32),
        (reg::ORACLE_OP, op),
    ] {
        // The oracle registers never ask for the data thread.
        if let Some(Followup::Oracle(op)) = dev.bar0_write(r.into(), &v.to_le_bytes()) {
            dev.oracle_op(op, m);
        }
    }
    let mut b = [0u8; 4];
    dev.bar0_read(reg::ORACLE_GEN.into(), &mut b);
    u32::from_le_bytes(b)
}

/// Guest RAM of a [`Harness`].
pub const RAM_SIZE: usize = 32 << 20;
/// GPA of the harness's context table.
pub const CTX_TABLE: u64 = 0x1000;
/// GPA of the harness's command ring.
pub const CMDQ: u64 = 0x8000;
/// log2 entries of the command ring.
pub const CMDQ_LOG2: u32 = 6;
/// GPA of the harness's event ring.
pub const EVQ: u64 = 0x9000;
/// log2 entries of the event ring.
pub const EVQ_LOG2: u32 = 6;
/// GPA of the SYNC word.
pub const SYNC_WORD: u64 = 0xa000;
/// GPA of the command queue's shadow page ([`Harness::with_cmd_shadow`]).
pub const CMD_SHADOW: u64 = 0xb000;
/// GPA where translation tables start (64 pages per context).
pub const TABLES: u64 = 0x10_0000;
/// GPA where data pages start.
pub const DATA: u64 = 0x80_0000;
/// VA of every harness context's work queue (its completion queue follows at +1 MiB).
pub const WQ_VA: u64 = 0x7f00_0000_0000;

/// A device core on anonymous guest RAM, with the driver's side of the rings played
/// by plain function calls: unit tests, the fuzz driver and the benches use it.
pub struct Harness {
    /// Guest RAM.
    pub ram: Arc<GuestRam>,
    /// The device state machine.
    pub core: Core,
    /// MMIO decode over the same shared state.
    pub dev: Mmio,
    /// Producers write the doorbell register on every post, shadow page or not (the
    /// driver's `trapped_doorbells` knob).
    pub forced_doorbells: bool,
    tables: HashMap<u16, Tables>,
    ctxs: HashMap<u16, HCtx>,
    cmd_tail: u32,
    /// GPA of the command queue's shadow page, 0 for none.
    cmd_shadow: u64,
    ev_seen: u64,
    data_next: u64,
}

struct HCtx {
    wq_gpa: u64,
    cq_gpa: u64,
    wq_log2: u8,
    cq_log2: u8,
    tail: u32,
    cq_seen: u64,
    /// GPA of the context's shadow page, 0 for none.
    shadow: u64,
}

impl Harness {
    /// An enabled device (`strict` as with `--strict`).
    pub fn new(strict: bool) -> Self {
        let ram = GuestRam::anonymous(&[(0, RAM_SIZE)]).expect("guest RAM");
        Self::with_ram(ram, strict)
    }

    /// An enabled device over `ram`, which must cover `[0, RAM_SIZE)`, with bus
    /// mastering on (as the driver's probe leaves it).
    pub fn with_ram(ram: GuestRam, strict: bool) -> Self {
        Self::build(ram, strict, 0)
    }

    /// An enabled device whose command queue has a shadow page, at [`CMD_SHADOW`].
    pub fn with_cmd_shadow(strict: bool) -> Self {
        let ram = GuestRam::anonymous(&[(0, RAM_SIZE)]).expect("guest RAM");
        Self::build(ram, strict, CMD_SHADOW)
    }

    /// An enabled device over `ram` (as [`Self::with_ram`]) whose command queue has the
    /// shadow page at `cmd_shadow` (0: none).
    pub fn build(ram: GuestRam, strict: bool, cmd_shadow: u64) -> Self {
        let sh = Shared::new(Arc::new(Counters::default()), strict);
        sh.set_bus_master(true);
        let mut h = Harness {
            ram: Arc::new(ram),
            core: Core::new(sh.clone()),
            dev: Mmio::new(sh),
            forced_doorbells: false,
            tables: Default::default(),
            ctxs: Default::default(),
            cmd_tail: 0,
            cmd_shadow,
            ev_seen: 0,
            data_next: DATA,
        };
        for (r, v) in [
            (reg::SHADOW_BASE_LO, cmd_shadow as u32),
            (reg::SHADOW_BASE_HI, (cmd_shadow >> 32) as u32),
            (reg::CTX_TABLE_LO, CTX_TABLE as u32),
            (reg::CMDQ_BASE_LO, CMDQ as u32),
            (reg::CMDQ_SIZE_LOG2, CMDQ_LOG2),
            (reg::EVQ_BASE_LO, EVQ as u32),
            (reg::EVQ_SIZE_LOG2, EVQ_LOG2),
            (reg::CONTROL, control::ENABLE),
        ] {
            h.write_reg(r, v);
        }
        h
    }

    /// Hands the device core to a real data thread ([`Engine`]) polling shadow pages for
    /// `spin`: from then on the harness plays only the driver (posts, commands,
    /// completions, events, memory); [`Self::run`] and register writes that need the
    /// data thread (`CONTROL`) must not be used.
    pub fn start_engine(&mut self, spin: std::time::Duration) -> std::io::Result<Engine> {
        // A disabled core in its place: polling it does nothing.
        let sh = self.core.shared().clone();
        let core = std::mem::replace(&mut self.core, Core::new(sh));
        Engine::with_core(core, self.ram.clone(), spin)
    }

    /// The current guest memory snapshot.
    pub fn mem(&self) -> Arc<GuestMem> {
        self.ram.snapshot()
    }

    /// A BAR0 register write, as the server would do it.
    pub fn write_reg(&mut self, off: u32, v: u32) {
        match self.dev.bar0_write(off.into(), &v.to_le_bytes()) {
            Some(Followup::Request(r)) => {
                let m = self.mem();
                self.core.handle(r, &m);
            }
            Some(Followup::Oracle(op)) => self.dev.oracle_op(op, &self.mem()),
            None => {}
        }
    }

    /// An oracle operation as the guest's oracle module does it: see [`oracle_call`].
    pub fn oracle(&mut self, op: u32, ctx: u16, gen: u32, start: u64, end: u64) -> u32 {
        oracle_call(&self.dev, &self.mem(), op, ctx, gen, start, end)
    }

    /// A BAR0 register read.
    pub fn reg(&self, off: u32) -> u32 {
        let mut b = [0u8; 4];
        self.dev.bar0_read(off.into(), &mut b);
        u32::from_le_bytes(b)
    }

    /// Counter `i`.
    pub fn counter(&self, i: u32) -> u64 {
        self.dev.counters().get(i)
    }

    /// Every `FABRIC_COUNTER` register, read as the driver reads them: two 32-bit
    /// accesses, low half first.
    pub fn fabric_counters(&self) -> Vec<u64> {
        (0..mnic_abi::fabric_counter::COUNT)
            .map(|i| {
                let off = reg::fabric_counter(i);
                u64::from(self.reg(off)) | u64::from(self.reg(off + 4)) << 32
            })
            .collect()
    }

    /// Polls the device until it is idle (at most `10_000` rounds).
    pub fn run(&mut self) -> Activity {
        let m = self.mem();
        self.core.run_until_idle(&m, 10_000)
    }

    /// Queues a command (rung, not run).
    pub fn cmd(&mut self, c: Command) {
        let n = 1u64 << CMDQ_LOG2;
        let m = self.mem();
        let at = CMDQ + size_of::<Command>() as u64 * u64::from(self.cmd_tail);
        mem::write(&m, at, c.as_bytes()).unwrap();
        self.cmd_tail = ring::next(u64::from(self.cmd_tail), n) as u32;
        if self.produce(self.cmd_shadow, self.cmd_tail) {
            self.write_reg(reg::CMDQ_TAIL, self.cmd_tail);
        }
    }

    /// The producer's rule (spec §4a) for a queue whose shadow page is at `shadow` (0:
    /// none) and whose new tail is `tail`: returns whether the doorbell register must
    /// be written too.
    pub fn produce(&self, shadow: u64, tail: u32) -> bool {
        if shadow == 0 {
            return true;
        }
        let m = self.mem();
        mem::store_u32(&m, shadow + Shadow::TAIL_OFFSET as u64, tail).unwrap();
        fence(Ordering::SeqCst);
        let polling = mem::load_u32(&m, shadow + Shadow::POLLING_OFFSET as u64).unwrap();
        Shadow::doorbell_needed(polling, self.forced_doorbells)
    }

    /// The `polling` word of the shadow page at `gpa`.
    pub fn polling_word(&self, gpa: u64) -> u32 {
        mem::load_u32(&self.mem(), gpa + Shadow::POLLING_OFFSET as u64).unwrap()
    }

    /// GPA of the shadow page of `ctx` (0: none).
    pub fn ctx_shadow(&self, ctx: u16) -> u64 {
        self.ctxs.get(&ctx).map_or(0, |h| h.shadow)
    }

    /// Queues a command from its parts.
    pub fn command(&mut self, opcode: u8, ctx: u16, arg0: u64, arg1: u64) {
        self.cmd(Command {
            opcode,
            ctx,
            arg0,
            arg1,
            ..Default::default()
        });
    }

    /// SYNC with `value` and run; returns the SYNC word afterwards.
    pub fn sync(&mut self, value: u64) -> u64 {
        self.command(cmd::SYNC, 0, SYNC_WORD, value);
        self.run();
        mem::load_u64(&self.mem(), SYNC_WORD).unwrap()
    }

    /// New events (by phase), consuming them (EVQ_HEAD).
    pub fn events(&mut self) -> Vec<Event> {
        let n = 1u64 << EVQ_LOG2;
        let m = self.mem();
        let mut out = Vec::new();
        loop {
            let mut b = [0u8; size_of::<Event>()];
            let at = EVQ + b.len() as u64 * ring::slot(self.ev_seen, n);
            mem::read(&m, at, &mut b).unwrap();
            let e = Event::read_from_bytes(&b).unwrap();
            if !e.is_new(ring::phase(self.ev_seen, n)) {
                break;
            }
            out.push(e);
            self.ev_seen += 1;
        }
        self.write_reg(reg::EVQ_HEAD, ring::slot(self.ev_seen, n) as u32);
        out
    }

    /// `len` bytes of fresh data pages (4 KiB aligned; 2 MiB aligned if `huge`).
    pub fn alloc(&mut self, len: u64, huge: bool) -> u64 {
        let align = if huge { pte::HUGE_SIZE } else { pte::PAGE_SIZE };
        let a = self.data_next.next_multiple_of(align);
        self.data_next = a + len.next_multiple_of(pte::PAGE_SIZE);
        assert!(self.data_next <= RAM_SIZE as u64, "harness RAM exhausted");
        a
    }

    /// The table tree of `ctx` (created on first use).
    pub fn tables(&mut self, ctx: u16) -> &mut Tables {
        let m = self.ram.snapshot();
        self.tables
            .entry(ctx)
            .or_insert_with(|| Tables::new(&m, TABLES + u64::from(ctx) * 0x4_0000))
    }

    /// Maps `[va, va + len)` of `ctx` to `[gpa, gpa + len)` with 4 KiB pages.
    pub fn map(&mut self, ctx: u16, va: u64, gpa: u64, len: u64, writable: bool) {
        let m = self.mem();
        self.tables(ctx).map_range(&m, va, gpa, len, writable);
    }

    /// A buffer of `len` bytes of fresh pages mapped writable at `va` of `ctx`: its GPA.
    pub fn buffer(&mut self, ctx: u16, va: u64, len: u64) -> u64 {
        let gpa = self.alloc(len, false);
        self.map(ctx, va, gpa, len.next_multiple_of(pte::PAGE_SIZE), true);
        gpa
    }

    /// `len` bytes of guest memory at `gpa`.
    pub fn read_bytes(&self, gpa: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        mem::read(&self.mem(), gpa, &mut b).expect("inside guest RAM");
        b
    }

    /// Writes `data` into guest memory at `gpa`.
    pub fn write_bytes(&self, gpa: u64, data: &[u8]) {
        mem::write(&self.mem(), gpa, data).expect("inside guest RAM");
    }

    /// Clears the 4 KiB leaf of `ctx` for `va`.
    pub fn unmap(&mut self, ctx: u16, va: u64) {
        let m = self.mem();
        self.tables(ctx).unmap(&m, va, false);
    }

    /// Writes the context-table entry of `ctx`, maps its queues and enables it
    /// (CTX_ENABLE, run).
    pub fn setup_ctx(&mut self, ctx: u16, wq_log2: u8, cq_log2: u8) {
        self.setup_ctx_with(ctx, wq_log2, cq_log2, false);
    }

    /// As [`Self::setup_ctx`], with a fresh (zeroed) shadow page for the work queue if
    /// `shadow`.
    pub fn setup_ctx_with(&mut self, ctx: u16, wq_log2: u8, cq_log2: u8, shadow: bool) {
        let shadow = if shadow {
            self.alloc(mnic_abi::SHADOW_PAGE_SIZE, false)
        } else {
            0
        };
        let wq_len = 64u64 << wq_log2;
        let cq_len = 32u64 << cq_log2;
        let wq_gpa = self.alloc(wq_len, false);
        let cq_gpa = self.alloc(cq_len, false);
        self.map(ctx, WQ_VA, wq_gpa, wq_len, false);
        self.map(ctx, WQ_VA + (1 << 20), cq_gpa, cq_len, true);
        let root = self.tables(ctx).root;
        let e = CtxEntry {
            flags: mnic_abi::CTX_FLAG_VALID,
            wq_size_log2: wq_log2,
            cq_size_log2: cq_log2,
            root,
            wq_va: WQ_VA,
            cq_va: WQ_VA + (1 << 20),
            shadow,
            ..Default::default()
        };
        let m = self.mem();
        mem::write(&m, CTX_TABLE + 64 * u64::from(ctx), e.as_bytes()).unwrap();
        self.ctxs.insert(
            ctx,
            HCtx {
                wq_gpa,
                cq_gpa,
                wq_log2,
                cq_log2,
                tail: 0,
                cq_seen: 0,
                shadow,
            },
        );
        self.command(cmd::CTX_ENABLE, ctx, 0, 0);
        self.run();
    }

    /// Writes `d` into the next WQ slot of `ctx` and rings its doorbell, or writes its
    /// shadow tail (not run).
    pub fn post(&mut self, ctx: u16, d: WorkDesc) {
        let m = self.mem();
        let h = self.ctxs.get_mut(&ctx).expect("setup_ctx first");
        let at = h.wq_gpa + size_of::<WorkDesc>() as u64 * u64::from(h.tail);
        mem::write(&m, at, d.as_bytes()).unwrap();
        h.tail = ring::next(u64::from(h.tail), 1 << h.wq_log2) as u32;
        let (tail, shadow) = (h.tail, h.shadow);
        if self.produce(shadow, tail) {
            self.dev.bar2_write(
                u64::from(ctx) * mnic_abi::DOORBELL_PAGE_SIZE,
                &tail.to_le_bytes(),
            );
        }
    }

    /// New completions of `ctx` (by phase).
    pub fn completions(&mut self, ctx: u16) -> Vec<Completion> {
        let m = self.mem();
        let h = self.ctxs.get_mut(&ctx).expect("setup_ctx first");
        let n = 1u64 << h.cq_log2;
        let mut out = Vec::new();
        loop {
            let mut b = [0u8; size_of::<Completion>()];
            let at = h.cq_gpa + b.len() as u64 * ring::slot(h.cq_seen, n);
            mem::read(&m, at, &mut b).unwrap();
            let c = Completion::read_from_bytes(&b).unwrap();
            if !c.is_new(ring::phase(h.cq_seen, n)) {
                break;
            }
            out.push(c);
            h.cq_seen += 1;
        }
        out
    }

    /// A COPY descriptor.
    pub fn copy_desc(src: u64, dst: u64, len: u32, tag: u64) -> WorkDesc {
        WorkDesc {
            opcode: mnic_abi::work::COPY,
            flags: mnic_abi::work::FLAG_NOTIFY,
            len,
            tag,
            src,
            dst,
            ..Default::default()
        }
    }
}
