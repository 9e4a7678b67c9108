//! [`EventQueue`]: the device's event ring (spec §9) as a consumer: new entries are found
//! by their phase bit (spec §7a), and `EVQ_HEAD` is written back to free their slots.

use mnic_abi::{event, reg, ring, Event};

use crate::dma::DmaArena;
use crate::error::Result;
use crate::mmio::Bar;

/// log2 of the event ring's entries.
pub const EVQ_LOG2: u32 = 6;
const ENTRIES: u64 = 1 << EVQ_LOG2;

/// The event ring in DMA memory and the consumer's count.
pub struct EventQueue {
    base: u64,
    /// Entries consumed since the device was enabled.
    seen: u64,
}

impl EventQueue {
    /// A ring of `ENTRIES` events in fresh (zeroed) DMA memory.
    pub fn new(mem: &DmaArena) -> Result<Self> {
        let base = mem.alloc_pages(1)?;
        Ok(Self { base, seen: 0 })
    }

    /// IOVA of the ring (`EVQ_BASE`).
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Forgets every entry (before an enable): the device starts again at slot 0 with
    /// phase 1, so old entries must not look new.
    pub fn restart(&mut self, mem: &DmaArena) {
        mem.write(self.base, &[0; (ENTRIES as usize) * size_of::<Event>()]);
        self.seen = 0;
    }

    /// The new events, oldest first; frees their slots (`EVQ_HEAD`).
    pub fn drain(&mut self, mem: &DmaArena, regs: &Bar) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(e) = mem.read_if_new::<Event>(
            self.base + size_of::<Event>() as u64 * ring::slot(self.seen, ENTRIES),
            Event::PHASE_OFFSET,
            event::FLAG_PHASE,
            ring::phase(self.seen, ENTRIES),
        ) {
            out.push(e);
            self.seen += 1;
        }
        if !out.is_empty() {
            regs.write32(reg::EVQ_HEAD.into(), ring::slot(self.seen, ENTRIES) as u32);
        }
        out
    }
}
