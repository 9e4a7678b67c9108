//! [`Nic`]: the whole device as the prototyping driver holds it: bound to `vfio-pci`,
//! opened through VFIO, BAR0 and the doorbell BAR mapped, the MSI-X vectors on eventfds,
//! DMA memory mapped, and the device brought up by hand the way `driver/device.rs` does it
//! in the kernel: reset, context table, command and event rings, enable. On top of that,
//! the primitives every experiment needs: registers and counters, posting commands, a SYNC
//! fence, and waiting for events.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mnic_abi::{
    cmd, control, counter, irq, reg, status, Command, CtxEntry, Event, BAR_DOORBELLS, BAR_REGS,
    CMD_FLAG_IRQ, DOORBELL_PAGE_SIZE, MNIC_ID_VALUE, MNIC_VERSION_VALUE, MSIX_VECTORS,
    NUM_CONTEXTS, VECTOR_CMD_DONE, VECTOR_EVENT,
};

use crate::bind::PciFunction;
use crate::cmdq::{CommandQueue, CMDQ_LOG2};
use crate::dma::DmaArena;
use crate::error::{Error, Result};
use crate::evq::{EventQueue, EVQ_LOG2};
use crate::irq::Vectors;
use crate::mmio::Bar;
use crate::vfio::VfioFunction;

/// How long the driver waits for the device (a SYNC, an event). A live device answers in
/// microseconds; under QEMU's TCG in milliseconds; this leaves room for a loaded host.
pub const DEVICE_WAIT: Duration = Duration::from_secs(20);

/// The device counters at one moment (spec §10).
#[derive(Clone, Copy, Debug)]
pub struct Counters(pub [u64; counter::COUNT as usize]);

impl Counters {
    /// How much counter `i` grew since `before`.
    pub fn since(&self, before: &Counters, i: u32) -> u64 {
        self.0[i as usize].wrapping_sub(before.0[i as usize])
    }
}

/// The device, owned by this process through VFIO.
pub struct Nic {
    /// The PCI function.
    pub pci: PciFunction,
    /// BAR0, the registers.
    pub regs: Bar,
    /// BAR2, the per-context doorbell pages.
    doorbells: Bar,
    /// MSI-X vectors 0 (events) and 1 (command completion).
    pub irqs: Vectors,
    /// The DMA memory everything the device touches lives in.
    pub mem: Rc<DmaArena>,
    ctx_table: u64,
    cmdq: CommandQueue,
    evq: EventQueue,
    sync_word: u64,
    sync_seq: u64,
    /// Events drained from the ring and not yet handed out.
    stash: VecDeque<Event>,
    // Last: the device file and container outlive the mappings and the DMA map above.
    vfio: VfioFunction,
}

impl Nic {
    /// Opens `pci` (already bound to `vfio-pci`), checks it is an mnic of this version,
    /// maps its BARs and DMA memory, turns bus mastering on and wires its interrupts. The
    /// device is left as it was found; [`Self::start`] resets and enables it.
    pub fn open(pci: PciFunction) -> Result<Self> {
        if crate::bind::allow_unsafe_interrupts()? {
            println!("# vfio_iommu_type1: allow_unsafe_interrupts set (no interrupt remapping)");
        }
        let vfio = VfioFunction::open(&pci.path)?;
        let regs = Bar::map(&vfio.device, BAR_REGS)?;
        let id = regs.read32(reg::ID.into());
        let version = regs.read32(reg::VERSION.into());
        if id != MNIC_ID_VALUE || version >> 16 != MNIC_VERSION_VALUE >> 16 {
            return Err(Error::Device(format!(
                "not an mnic 1.x: ID {id:#x} VERSION {version:#x}"
            )));
        }
        let doorbells = Bar::map(&vfio.device, BAR_DOORBELLS)?;
        vfio.set_bus_master(true)?;
        let irqs = Vectors::new(usize::from(MSIX_VECTORS))?;
        vfio.enable_msix(&irqs)?;
        let mem = Rc::new(DmaArena::new(vfio.container.clone())?);
        let ctx_table = mem.alloc(
            NUM_CONTEXTS as usize * size_of::<CtxEntry>(),
            mnic_abi::pte::PAGE_SIZE as usize,
        )?;
        let cmdq = CommandQueue::new(&mem)?;
        let evq = EventQueue::new(&mem)?;
        let sync_word = mem.alloc(8, 8)?;
        let nic = Self {
            pci,
            regs,
            doorbells,
            irqs,
            mem,
            ctx_table,
            cmdq,
            evq,
            sync_word,
            sync_seq: 0,
            stash: VecDeque::new(),
            vfio,
        };
        Ok(nic)
    }

    /// Resets the device and enables it with this driver's rings and context table.
    pub fn start(&mut self) -> Result<()> {
        self.reset()?;
        self.enable()
    }

    /// A BAR0 register.
    pub fn reg(&self, off: u32) -> u32 {
        self.regs.read32(off.into())
    }

    /// Writes a BAR0 register.
    pub fn set_reg(&self, off: u32, v: u32) {
        self.regs.write32(off.into(), v);
    }

    /// Writes a 64-bit address into a `_LO`/`_HI` register pair.
    fn set_reg_pair(&self, lo: u32, v: u64) {
        self.set_reg(lo, v as u32);
        self.set_reg(lo + 4, (v >> 32) as u32);
    }

    /// Every device counter, now.
    pub fn counters(&self) -> Counters {
        let mut c = [0; counter::COUNT as usize];
        for (i, v) in c.iter_mut().enumerate() {
            *v = self.regs.read64(reg::counter(i as u32).into());
        }
        Counters(c)
    }

    /// `CONTROL.RESET` (spec §3a): every register back to its reset value, every context
    /// and TLB entry dropped. Checks that the device reads back disabled.
    pub fn reset(&mut self) -> Result<()> {
        self.set_reg(reg::CONTROL, control::RESET);
        let (ctl, st) = (self.reg(reg::CONTROL), self.reg(reg::STATUS));
        if ctl != 0 || st != 0 {
            return Err(Error::Device(format!(
                "after reset CONTROL {ctl:#x} STATUS {st:#x}, want 0 and 0"
            )));
        }
        self.cmdq.restart();
        self.evq.restart(&self.mem);
        self.stash.clear();
        Ok(())
    }

    /// Programs the context table, the rings and the interrupt mask, and enables the
    /// device in strict mode; checks `STATUS.ENABLED` (a refused enable only shows there).
    pub fn enable(&mut self) -> Result<()> {
        self.set_reg_pair(reg::CTX_TABLE_LO, self.ctx_table);
        self.set_reg_pair(reg::CMDQ_BASE_LO, self.cmdq.base());
        self.set_reg(reg::CMDQ_SIZE_LOG2, CMDQ_LOG2);
        self.set_reg_pair(reg::EVQ_BASE_LO, self.evq.base());
        self.set_reg(reg::EVQ_SIZE_LOG2, EVQ_LOG2);
        // The producer and consumer indices keep their values across an enable (spec §3a).
        self.set_reg(reg::CMDQ_TAIL, self.cmdq.tail());
        self.set_reg(reg::EVQ_HEAD, 0);
        self.set_reg(reg::IRQ_MASK, 0);
        self.set_reg(reg::CONTROL, control::ENABLE | control::STRICT);
        let st = self.reg(reg::STATUS);
        if st & status::ENABLED == 0 {
            return Err(Error::Device(format!(
                "enable refused: STATUS {st:#x} ERROR_CODE {}",
                self.reg(reg::ERROR_CODE)
            )));
        }
        Ok(())
    }

    /// IOVA of the context table.
    pub fn ctx_table(&self) -> u64 {
        self.ctx_table
    }

    /// Writes context-table entry `index` (the device reads it at `CTX_ENABLE`).
    pub fn write_ctx_entry(&self, index: u16, e: &CtxEntry) {
        self.mem.write_obj(
            self.ctx_table + (size_of::<CtxEntry>() * usize::from(index)) as u64,
            e,
        );
    }

    /// Posts a command (not waited for).
    pub fn post(&mut self, c: Command) -> Result<()> {
        self.cmdq.post(&self.mem, &self.regs, c)
    }

    /// Posts a command from its parts (not waited for).
    pub fn command(&mut self, opcode: u8, ctx: u16, arg0: u64, arg1: u64) -> Result<()> {
        self.post(Command {
            opcode,
            ctx,
            arg0,
            arg1,
            ..Default::default()
        })
    }

    /// Posts a `SYNC` that raises vector 1 when done and waits until its value is in
    /// memory: every command before it has then taken effect (spec §7). Returns whether
    /// a vector 1 signal was consumed on the way (the signal can also arrive after the
    /// value is seen: [`Self::signalled_since`] waits for it).
    pub fn sync(&mut self) -> Result<bool> {
        self.sync_seq += 1;
        let want = self.sync_seq;
        self.post(Command {
            opcode: cmd::SYNC,
            flags: CMD_FLAG_IRQ,
            arg0: self.sync_word,
            arg1: want,
            ..Default::default()
        })?;
        let start = Instant::now();
        let mut woken = false;
        while self.mem.read_u64(self.sync_word) != want {
            let left = DEVICE_WAIT.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(Error::Timeout {
                    what: format!(
                        "SYNC {want} (CMDQ_HEAD {}, STATUS {:#x})",
                        self.reg(reg::CMDQ_HEAD),
                        self.reg(reg::STATUS)
                    ),
                    waited: DEVICE_WAIT,
                });
            }
            woken |= self.irqs.wait(VECTOR_CMD_DONE, left)?;
        }
        // Collect the signal if it arrived after the value was seen, and clear the cause.
        woken |= self.irqs.take(VECTOR_CMD_DONE);
        self.set_reg(reg::IRQ_STATUS, irq::CMD_DONE);
        Ok(woken)
    }

    /// Posts a command and a SYNC after it, and waits: the command has taken effect.
    pub fn run_command(&mut self, opcode: u8, ctx: u16, arg0: u64, arg1: u64) -> Result<()> {
        self.command(opcode, ctx, arg0, arg1)?;
        self.sync()?;
        Ok(())
    }

    /// Clears the event causes and moves new events from the ring to the stash (clearing
    /// first: a cause raised while draining signals again and is not lost).
    fn collect_events(&mut self) {
        self.set_reg(reg::IRQ_STATUS, irq::EVENT | irq::ERROR);
        let new = self.evq.drain(&self.mem, &self.regs);
        self.stash.extend(new);
    }

    /// The oldest event not yet handed out, waiting up to `timeout` for vector 0.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Event> {
        let start = Instant::now();
        loop {
            self.collect_events();
            if let Some(e) = self.stash.pop_front() {
                return Ok(e);
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(Error::Timeout {
                    what: "an event".into(),
                    waited: timeout,
                });
            }
            self.irqs.wait(VECTOR_EVENT, left)?;
        }
    }

    /// Whether MSI-X vector `v` has signalled since the driver had seen `before` signals
    /// from it, waiting for the signal if it has not come yet: the device writes events
    /// first and signals at the end of its poll round, so an event can be read before its
    /// interrupt arrives.
    pub fn signalled_since(&self, v: u16, before: u64) -> Result<bool> {
        if self.irqs.seen(v) > before {
            return Ok(true);
        }
        self.irqs.wait(v, DEVICE_WAIT)
    }

    /// Every event that has arrived and not been handed out, without waiting.
    pub fn pending_events(&mut self) -> Vec<Event> {
        self.collect_events();
        self.stash.drain(..).collect()
    }

    /// Writes `tail` to the `WQ_TAIL` doorbell of context `ctx` (spec §4).
    pub fn ring_doorbell(&self, ctx: u16, tail: u32) {
        self.doorbells.write32(
            u64::from(ctx) * DOORBELL_PAGE_SIZE + u64::from(reg::DB_WQ_TAIL),
            tail,
        );
    }
}

impl Drop for Nic {
    fn drop(&mut self) {
        // Leave a quiet device behind: no context, no DMA, no interrupt, before the DMA
        // memory is unmapped (the arena is dropped after this).
        self.set_reg(reg::CONTROL, control::RESET);
        let _ = self.vfio.set_bus_master(false);
        self.vfio.disable_msix();
    }
}
