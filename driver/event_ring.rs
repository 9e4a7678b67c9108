// SPDX-License-Identifier: GPL-2.0
//! The event ring (spec §7, index and phase rules §7a), consumed only by the event interrupt
//! thread. Telling the device which slots are free again (the `EVQ_HEAD` register) is a
//! register access, done by `MnicDev` (`device.rs`).

use kernel::{
    device::{Bound, Device},
    dma::{Coherent, DmaAddress},
    prelude::*,
};

use crate::abi::{ring, Event};
use crate::dma_mem::load;

/// Log2 of the number of event slots (the `EVQ_SIZE_LOG2` register).
pub(crate) const LOG2: u32 = 8;
/// Event slots.
const ENTRIES: u64 = 1 << LOG2;
/// 64-bit words per event (32 bytes).
const WORDS: usize = size_of::<Event>() / size_of::<u64>();

// The phase bit is read from the entry's first word alone, before the rest.
const _: () = assert!(Event::PHASE_OFFSET < size_of::<u64>());

/// The consumer side of the event ring.
pub(crate) struct EventRing {
    ring: Coherent<[u64]>,
    /// Events taken so far. The slot of the next one and the phase bit it carries once the
    /// device wrote it both follow from this count (spec §7a). Wrapping is harmless: the ring
    /// size divides 2^64 an even number of times.
    consumed: u64,
}

impl EventRing {
    /// An empty ring in fresh DMA memory (every phase bit 0: nothing new on the first pass).
    pub(crate) fn new(dev: &Device<Bound>) -> Result<Self> {
        Ok(EventRing {
            ring: Coherent::<u64>::zeroed_slice(dev, ENTRIES as usize * WORDS, GFP_KERNEL)?,
            consumed: 0,
        })
    }

    /// Bus address of the ring (the `EVQ_BASE` registers).
    pub(crate) fn dma_address(&self) -> DmaAddress {
        self.ring.dma_address()
    }

    /// The consumer index, for the `EVQ_HEAD` register: slots before it are free again.
    pub(crate) fn head(&self) -> u32 {
        // Below ENTRIES: fits in u32.
        ring::slot(self.consumed, ENTRIES) as u32
    }

    /// Takes the next event written by the device, if any.
    pub(crate) fn next(&mut self) -> Option<Event> {
        let base = ring::slot(self.consumed, ENTRIES) as usize * WORDS;
        let first = load(&self.ring, base).ok()?;
        let mut words = [first, 0, 0, 0];
        let head: Event = zerocopy::transmute!(words);
        if !head.is_new(ring::phase(self.consumed, ENTRIES)) {
            return None;
        }
        // The device wrote the rest of the entry before the word with the phase bit.
        core::sync::atomic::fence(core::sync::atomic::Ordering::Acquire);
        for (i, w) in words.iter_mut().enumerate().skip(1) {
            *w = load(&self.ring, base + i).ok()?;
        }
        self.consumed = self.consumed.wrapping_add(1);
        Some(zerocopy::transmute!(words))
    }
}
