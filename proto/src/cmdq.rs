//! [`CommandQueue`]: the device's command ring (spec §7) as a producer: entries written
//! into DMA memory, then the new tail to `CMDQ_TAIL`. This driver gives the command queue
//! no shadow page (`SHADOW_BASE` = 0), so every post rings the register (spec §4a).

use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, Instant};

use mnic_abi::{reg, ring, Command};

use crate::dma::DmaArena;
use crate::error::{Error, Result};
use crate::mmio::Bar;

/// log2 of the command ring's entries.
pub const CMDQ_LOG2: u32 = 6;
const ENTRIES: u64 = 1 << CMDQ_LOG2;

/// The command ring in DMA memory and the producer's tail.
pub struct CommandQueue {
    base: u64,
    tail: u64,
}

impl CommandQueue {
    /// A ring at `base` (IOVA, 4 KiB aligned, `ENTRIES` commands).
    pub fn new(mem: &DmaArena) -> Result<Self> {
        let base = mem.alloc_pages(1)?;
        Ok(Self { base, tail: 0 })
    }

    /// IOVA of the ring (`CMDQ_BASE`).
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The producer's index (what `CMDQ_TAIL` was last written with).
    pub fn tail(&self) -> u32 {
        self.tail as u32
    }

    /// Forgets the producer index (the device's went back to 0 at reset or enable).
    pub fn restart(&mut self) {
        self.tail = 0;
    }

    /// Writes `c` into the next slot and rings `CMDQ_TAIL`, waiting for room if the ring
    /// is full (the device consumes up to `CMDQ_HEAD`).
    pub fn post(&mut self, mem: &DmaArena, regs: &Bar, c: Command) -> Result<()> {
        let start = Instant::now();
        let limit = Duration::from_secs(10);
        while ring::free(
            u64::from(regs.read32(reg::CMDQ_HEAD.into())),
            self.tail,
            ENTRIES,
        ) == 0
        {
            if start.elapsed() > limit {
                return Err(Error::Timeout {
                    what: "room in the command ring".into(),
                    waited: limit,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        mem.write_obj(self.base + size_of::<Command>() as u64 * self.tail, &c);
        self.tail = ring::next(self.tail, ENTRIES);
        // The entry must be in memory before the device sees the new tail.
        fence(Ordering::SeqCst);
        regs.write32(reg::CMDQ_TAIL.into(), self.tail as u32);
        Ok(())
    }
}
