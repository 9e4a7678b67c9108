// SPDX-License-Identifier: GPL-2.0
//! Which open context owns which hardware context index: the index is reserved by `open`,
//! the context published once it is built, and the index freed again at release. The event
//! thread finds a fault's or completion's context here; debugfs lists the open contexts.
//!
//! The device reaches the contexts through this table only as [`OpenContexts`] (waking
//! sleepers, zapping doorbells): every context holds the device, so the device cannot name
//! them.

use kernel::{
    new_spinlock,
    prelude::*,
    sync::{Arc, SpinLock},
};

use crate::abi;
use crate::context::Ctx;
use crate::device::OpenContexts;

/// A hardware context index: free, being set up by `open`, or in use.
enum Slot {
    Free,
    Reserved,
    Live(Arc<Ctx>),
}

/// The context index → context table of one device (`NUM_CONTEXTS` slots).
#[pin_data]
pub(crate) struct ContextSlots {
    #[pin]
    slots: SpinLock<KVec<Slot>>,
}

impl ContextSlots {
    /// A table with every index free.
    pub(crate) fn new() -> Result<impl PinInit<Self, Error>> {
        let mut slots = KVec::with_capacity(abi::NUM_CONTEXTS as usize, GFP_KERNEL)?;
        for _ in 0..abi::NUM_CONTEXTS {
            slots.push(Slot::Free, GFP_KERNEL)?;
        }
        Ok(try_pin_init!(ContextSlots {
            slots <- new_spinlock!(slots),
        }? Error))
    }

    /// Reserves a free hardware context index.
    pub(crate) fn reserve(&self) -> Result<u16> {
        let mut slots = self.slots.lock();
        let index = slots
            .iter()
            .position(|s| matches!(s, Slot::Free))
            .ok_or(EBUSY)?;
        slots[index] = Slot::Reserved;
        Ok(index as u16)
    }

    /// Makes `ctx` the context at its reserved `index` (found by the event handler from now on).
    pub(crate) fn publish(&self, index: u16, ctx: Arc<Ctx>) {
        if let Some(slot) = self.slots.lock().get_mut(index as usize) {
            *slot = Slot::Live(ctx);
        }
    }

    /// Frees context index `index`. The `Arc` is dropped after the spinlock is released.
    pub(crate) fn release(&self, index: u16) {
        let old = self
            .slots
            .lock()
            .get_mut(index as usize)
            .map(|s| core::mem::replace(s, Slot::Free));
        drop(old);
    }

    /// The context at `index`, if any.
    pub(crate) fn get(&self, index: u16) -> Option<Arc<Ctx>> {
        match self.slots.lock().get(index as usize) {
            Some(Slot::Live(ctx)) => Some(ctx.clone()),
            _ => None,
        }
    }

    /// The open contexts (for debugfs and unbind).
    pub(crate) fn live(&self) -> Result<KVec<Arc<Ctx>>> {
        let mut out = KVec::with_capacity(abi::NUM_CONTEXTS as usize, GFP_KERNEL)?;
        for slot in self.slots.lock().iter() {
            if let Slot::Live(ctx) = slot {
                // Cannot fail: the capacity covers every slot.
                let _ = out.push_within_capacity(ctx.clone());
            }
        }
        Ok(out)
    }
}

impl OpenContexts for ContextSlots {
    fn wake_waiters(&self) {
        for slot in self.slots.lock().iter() {
            if let Slot::Live(ctx) = slot {
                ctx.wake_waiters();
            }
        }
    }

    fn zap_doorbells(&self) -> Result {
        for ctx in self.live()?.iter() {
            ctx.zap_doorbell();
        }
        Ok(())
    }

    fn unmap_dma(&self) -> Result {
        for ctx in self.live()?.iter() {
            if !ctx.try_unmap_registrations() {
                pr_warn!(
                    "mnic ctx {}: unbind: a fault holds the registrations; their DMA mappings \
                     stay until they go\n",
                    ctx.index
                );
            }
        }
        Ok(())
    }
}
