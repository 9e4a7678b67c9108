// SPDX-License-Identifier: GPL-2.0
//! The command ring (spec §7, index rules §7a) and the SYNC tickets it hands out.
//!
//! Only the ring itself lives here: where the next command goes, how many slots are free,
//! which ticket the next SYNC carries. Reading the device's head and writing the tail are
//! register accesses, done by `MnicDev` (`device.rs`) under its command-queue mutex.

use kernel::{
    device::{Bound, Device},
    dma::{Coherent, DmaAddress},
    prelude::*,
};

use crate::abi::{self, ring, Command};
use crate::dma_mem::store;

/// Log2 of the number of command slots (the `CMDQ_SIZE_LOG2` register).
pub(crate) const LOG2: u32 = 8;
/// Command slots.
const ENTRIES: u64 = 1 << LOG2;
/// 64-bit words per command (32 bytes).
const WORDS: usize = size_of::<Command>() / size_of::<u64>();
/// Most commands one post may add: one slot always stays empty (spec §7a).
pub(crate) const MAX_BATCH: usize = ENTRIES as usize - 1;
/// Pending commands above which the cached head is re-read before posting.
const NEARLY_FULL: u64 = ENTRIES - 8;

/// A SYNC ticket: the value the device writes to the sync word when it executes that SYNC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Ticket(pub(crate) u64);

impl Ticket {
    /// A ticket no SYNC ever reaches: waiting for it waits until the device is quiesced.
    pub(crate) const QUIESCED: Ticket = Ticket(u64::MAX);
}

/// The command ring. Tickets are handed out in ring order, and the device executes commands in
/// order, so the sync word only grows and "word >= ticket" means "that SYNC has executed".
pub(crate) struct CmdRing {
    ring: Coherent<[u64]>,
    /// Producer index: the slot the next command goes to.
    tail: u32,
    /// Last `CMDQ_HEAD` read from the device (refreshed only when the ring looks full).
    head: u32,
    next_ticket: u64,
    /// The value last written to the device's `SPIN_US` (0 at reset: the device's own
    /// budget); written again when debugfs `trapped_doorbells` or `spin_us` asks for another.
    pub(crate) spin_applied: u32,
}

impl CmdRing {
    /// An empty ring in fresh DMA memory; the first SYNC gets ticket 1 (the sync word starts
    /// at 0).
    pub(crate) fn new(dev: &Device<Bound>) -> Result<Self> {
        Ok(CmdRing {
            ring: Coherent::<u64>::zeroed_slice(dev, ENTRIES as usize * WORDS, GFP_KERNEL)?,
            tail: 0,
            head: 0,
            next_ticket: 1,
            spin_applied: 0,
        })
    }

    /// Bus address of the ring (the `CMDQ_BASE` registers).
    pub(crate) fn dma_address(&self) -> DmaAddress {
        self.ring.dma_address()
    }

    /// The producer index, for the `CMDQ_TAIL` register.
    pub(crate) fn tail(&self) -> u32 {
        self.tail
    }

    /// Records the device's consumer index (the `CMDQ_HEAD` register).
    pub(crate) fn set_head(&mut self, head: u32) {
        // A register index is taken modulo the ring size (spec §7a); the result fits in u32.
        self.head = (u64::from(head) % ENTRIES) as u32;
    }

    /// Whether the cached head leaves so little room that it is worth reading it again.
    pub(crate) fn nearly_full(&self) -> bool {
        ring::pending(self.head.into(), self.tail.into(), ENTRIES) > NEARLY_FULL
    }

    /// Slots free by the cached head (one always stays empty, so `head == tail` is empty).
    pub(crate) fn free(&self) -> usize {
        // At most ENTRIES - 1: fits in usize.
        ring::free(self.head.into(), self.tail.into(), ENTRIES) as usize
    }

    /// Writes `cmd` into the tail slot and advances the tail (the device sees it only once
    /// the tail register is written).
    pub(crate) fn push(&mut self, cmd: &Command) -> Result {
        let words: [u64; WORDS] = zerocopy::transmute!(*cmd);
        let base = self.tail as usize * WORDS;
        for (i, w) in words.iter().enumerate() {
            store(&self.ring, base + i, *w)?;
        }
        // Below ENTRIES: fits in u32.
        self.tail = ring::next(self.tail.into(), ENTRIES) as u32;
        Ok(())
    }

    /// Writes a SYNC that makes the device store its ticket at bus address `sync_word`, and
    /// returns that ticket.
    pub(crate) fn push_sync(&mut self, sync_word: DmaAddress) -> Result<Ticket> {
        let ticket = self.next_ticket;
        self.push(&Command {
            opcode: abi::cmd::SYNC,
            arg0: sync_word,
            arg1: ticket,
            ..Command::default()
        })?;
        self.next_ticket += 1;
        Ok(Ticket(ticket))
    }
}
